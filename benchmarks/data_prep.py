"""Data preparation against the tools users run: Google's create_pretraining_data.py.

python benchmarks/data_prep.py --json=benchmarks/results/data_prep.json

Same corpus (WikiText-2 valid + test from ../shared/data, ~0.55 M WordPiece tokens, in the
BERT text format: one sentence per line, articles separated by blank lines), same
vocabulary (BERT-Base uncased, 30,522 tokens, from the MiniLM test package), same flags
(max_seq_length 128, max_predictions_per_seq 20, masked_lm_prob 0.15, random_seed 12345,
short_seq_prob 0.1) at dupe_factor 1 and 5:

- ours: `python -m bert_jax.tools.create_pretraining_data --num_workers=1` (one core),
  plus what it leaves for later: one pass of the input pipeline's masking over every
  instance (`make_pretraining_iterator`, batch 256), counted on our side. The pass runs
  in a process of its own; its CPU counts from the tokenizer load to the last batch,
  i.e. what a training process spends on it, and the process's total with interpreter
  start-up and imports (about 0.3 CPU s, paid by any training process) is recorded
  beside it (`cpu_seconds_with_mask_process`);
- Model Garden: `official/nlp/data/create_pretraining_data.py` of tf-models-official 2.20,
  as installed from PyPI into .peer_prep/ (benchmarks/setup_peers.sh), TensorFlow 2.21;
- the original: `bert/create_pretraining_data.py` of bert-tensorflow 1.0.4 (Google's 2018
  release on PyPI) as installed, run under TensorFlow 2.21 with `tensorflow` bound to
  `tf.compat.v1` (it is TF1 code: tf.flags, tf.gfile, tf.python_io); no line changed.

Each run is a subprocess; wall time and the peak resident memory of its process tree
(sampled every 50 ms with psutil) are recorded, and its CPU seconds (user + system of
all its processes and threads): "per core" throughput is tokens x dupe_factor per CPU
second, which Rust's tokenizer threads cannot flatter and a busy machine distorts less
than wall time. All three again on the corpus repeated 10x (5.5 M tokens), where fixed
start-up costs (TensorFlow's import on their side, two interpreters on ours) weigh less.
Then ours alone on the corpus repeated 10x and 100x: peak memory must not grow with the corpus (preparation streams windows).
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

import peers  # (benchmarks/: the CPU's name, the commit, the MiniLM test package)

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", str(REPO.parent / "shared" / "data"), "Shared data dir.")
flags.DEFINE_string("json", "", "Write the results here.")
flags.DEFINE_string("workdir", "", "Scratch directory (default: a temporary one).")
flags.DEFINE_string("dupe_factors", "1,5", "Dupe factors compared with the peers.")
flags.DEFINE_string("scales", "10,100", "Corpus repetitions for ours' memory check.")
flags.DEFINE_string("peers", "model_garden,original", "Which of Google's scripts to run.")
flags.DEFINE_string("steady_dupe_factors", "1,5", "Dupe factors on the repeated corpus.")
flags.DEFINE_integer("steady_scale", 10, "Also compare all tools on the corpus "
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
# One pass of our input pipeline's masking over every instance of a shard directory. It
# prints the CPU seconds of the pass itself (tokenizer, shards, every batch: what a training
# process pays for it), apart from the interpreter's start-up and imports, which a
# training process has paid anyway; the process's total is measured outside.
_MASK_PASS = """
import sys, time
sys.path.insert(0, {repo!r})
from bert_jax import config as config_lib
from bert_jax.data import input_pipeline as ip
from bert_jax.tokenization import load_tokenizer
t0 = time.process_time()
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
print("MASK_PASS_CPU_SECONDS", time.process_time() - t0)
"""


def vocab_file() -> str:
  return str(pathlib.Path(peers.minilm_dir()) / "vocab.txt")


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
          "peak_rss_mib": round(peak / 2**20, 1), "output": text[-2000:]}


def run_ours(corpus, vocab, out, dupe, workers=1, mask_pass=True) -> dict:
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
         f"--input_file={corpus}", f"--vocab_file={vocab}", f"--output_dir={out}",
         f"--dupe_factor={dupe}", f"--num_workers={workers}", "--overwrite",
         *[f"--{k}={v}" for k, v in COMMON.items()]]
  prep = measure(cmd, env)
  prep.pop("output")
  meta = json.loads((pathlib.Path(out) / "metadata.json").read_text())
  r = {"prepare": prep, "instances": meta["num_instances"], "tokens": meta["stats"]["tokens"]}
  r["seconds"], r["cpu_seconds"], r["peak_rss_mib"] = (
      prep["seconds"], prep["cpu_seconds"], prep["peak_rss_mib"])
  if mask_pass:
    code = _MASK_PASS.format(repo=str(REPO), shards=str(out), vocab=vocab,
                             n=meta["num_instances"])
    m = measure([sys.executable, "-c", code], env)
    work = float(re.search(r"MASK_PASS_CPU_SECONDS ([0-9.]+)", m.pop("output")).group(1))
    m["pass_cpu_seconds"] = round(work, 2)  # the pass alone (what training pays for it)
    r["mask_pass"] = m
    r["seconds"] = round(prep["seconds"] + m["seconds"], 2)
    r["cpu_seconds"] = round(prep["cpu_seconds"] + work, 2)
    # Counting the masking process's interpreter start-up and imports as well:
    r["cpu_seconds_with_mask_process"] = round(prep["cpu_seconds"] + m["cpu_seconds"], 2)
    r["peak_rss_mib"] = max(prep["peak_rss_mib"], m["peak_rss_mib"])
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
  r.pop("output")
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
      "cpu": peers.cpu_name(), "cores": os.cpu_count(),
      "load_average_at_start": os.getloadavg()[0], "python": platform.python_version()},
      "corpus": {"file": "WikiText-2 valid+test in BERT format", "articles": articles,
                 "bytes": corpus.stat().st_size}, "flags": COMMON, "runs": []}
  results["commit"] = peers.commit()
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
    for dupe in [int(d) for d in FLAGS.steady_dupe_factors.split(",")]:
      ours = run_ours(big, vocab, work / f"ours_steady_x{k}_d{dupe}", dupe)
      rows = [("bert_jax (prep + masking pass)", ours)]
      for peer in [p for p in FLAGS.peers.split(",") if p]:
        rows.append((peer, run_peer(peer, big, vocab, work / f"{peer}_x{k}_d{dupe}.tfrecord",
                                    dupe)))
      for name, r in rows:
        r.update(tool=name, dupe_factor=dupe, scale=k,
                 tokens_per_s_per_core=round(ours["tokens"] * dupe / r["cpu_seconds"], 1))
        results["runs"].append(r)
        print(f"x{k} dupe {dupe} | {name:32s} | {r['seconds']:7.1f} s ({r['cpu_seconds']:.1f} "
              f"CPU s) | {r['tokens_per_s_per_core']:>10,.0f} tok/s/core | "
              f"{r['peak_rss_mib']:7.1f} MiB", flush=True)
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
