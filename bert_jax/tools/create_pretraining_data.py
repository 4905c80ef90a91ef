"""Text corpus -> ArrayRecord shards of unmasked sentence pairs (bert_jax/data/shards.py).

python -m bert_jax.tools.create_pretraining_data \
    --input_file='corpus/*.txt,more/*.gz' --vocab_file=vocab.txt --output_dir=shards/ \
    --max_seq_length=128 --dupe_factor=10

The flags are the original's (`--output_dir` instead of `--output_file`).
"""
from __future__ import annotations

import sys
from typing import Sequence

from bert_jax.data import corpus, shards, tfds_sources


def main(argv: Sequence[str]) -> None:
  del argv
  f = FLAGS
  if not f.merge and not (f.input_file and f.vocab_file):
    sys.exit("error: --input_file and --vocab_file are required (only --merge runs without).")
  try:
    if f.merge:
      print(shards.format_summary(shards.merge(f.output_dir, f.num_tasks, f.overwrite)))
      return
    # tfds:NAME items (e.g. tfds:wikipedia/20230601.en) become BERT-format text files.
    input_file = tfds_sources.expand_corpus(f.input_file, f.tfds_data_dir)
    summary = shards.run(
        input_file, f.vocab_file, f.output_dir, do_lower_case=f.do_lower_case,
        max_seq_length=f.max_seq_length, short_seq_prob=f.short_seq_prob,
        dupe_factor=f.dupe_factor, random_seed=f.random_seed, pairing=f.pairing,
        max_predictions_per_seq=f.max_predictions_per_seq, masked_lm_prob=f.masked_lm_prob,
        do_whole_word_mask=f.do_whole_word_mask, input_format=f.input_format,
        documents_per_window=f.documents_per_window, num_workers=f.num_workers,
        overwrite=f.overwrite, num_tasks=f.num_tasks, task_index=f.task_index)
    if f.num_tasks > 1:
      print(f"task {f.task_index} of {f.num_tasks} done; when all are, run the same command "
            f"with --merge (writes {shards.METADATA_FILE}).")
  except (shards.PreparationError, corpus.CorpusError, tfds_sources.TfdsError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(shards.format_summary(summary))


def define_flags():
  """The original's flags (plus the output directory and scaling knobs)."""
  from absl import flags
  flags.DEFINE_string("input_file", None,
                      "Input text: comma-separated globs; plain or gzip; one sentence per "
                      "line, blank line between documents; or tfds:NAME, a TFDS text "
                      "dataset (e.g. tfds:wikipedia/20230601.en, its train split).")
  flags.DEFINE_string("tfds_data_dir", "", "TFDS data directory for tfds:NAME inputs "
                      "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
  flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt or SentencePiece .model.")
  flags.DEFINE_string("output_dir", None, "Directory for the shards and metadata.json.")
  flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (uncased models).")
  flags.DEFINE_bool("do_whole_word_mask", False,
                    "Recorded for the pipeline: mask whole words (config.data.whole_word_mask).")
  flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
  flags.DEFINE_integer("max_predictions_per_seq", 20,
                       "Recorded for the pipeline: maximum masked LM predictions per sequence.")
  flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
  flags.DEFINE_integer("dupe_factor", 10,
                       "Passes over the input (different pairs; masks differ every epoch).")
  flags.DEFINE_float("masked_lm_prob", 0.15, "Recorded for the pipeline: masked LM share.")
  flags.DEFINE_enum("pairing", "balanced", ["balanced", "google"],
                    "google: the original algorithm draw for draw; balanced: NSP labels a "
                    "fair coin, short_seq_prob = share of short instances (instances.py).")
  flags.DEFINE_float("short_seq_prob", 0.1,
                     "Probability of creating sequences shorter than the maximum length.")
  flags.DEFINE_enum("input_format", "text", ["text", "gutenberg"],
                    "text: BERT format; gutenberg: raw Project Gutenberg books.")
  flags.DEFINE_integer("documents_per_window", 1000,
                       "Documents per window (the pool for random-next segments; one shard "
                       "each); bounds memory.")
  flags.DEFINE_integer("num_workers", 0, "Worker processes; 0 = all CPU cores.")
  flags.DEFINE_bool("overwrite", False, "Replace shards already in --output_dir.")
  flags.DEFINE_integer("num_tasks", 1, "Split the job into this many independent tasks "
                       "(machines, scheduler jobs) writing into one --output_dir.")
  flags.DEFINE_integer("task_index", 0, "Which task of --num_tasks this is (0-based): it "
                       "pairs windows w with w % num_tasks == task_index.")
  flags.DEFINE_bool("merge", False, "After all --num_tasks tasks: write metadata.json from "
                    "their metadata-task-*.json.")
  flags.mark_flags_as_required(["output_dir"])
  return flags.FLAGS


if __name__ == "__main__":
  from absl import app
  FLAGS = define_flags()
  app.run(main)
