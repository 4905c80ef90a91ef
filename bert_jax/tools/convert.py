"""Converts a pretrained BERT checkpoint to ours (orbax), Hugging Face or Google TF format.

python -m bert_jax.tools.convert --input=uncased_L-12_H-768_A-12 --output=ckpt/bert_base
python -m bert_jax.tools.convert --input=ckpt/bert_base --output=hf/bert_base --to=hf

--input: anything `checkpoints.load_pretrained` reads (Hugging Face directory, Google TF
checkpoint directory / prefix / .zip as Google distributes it, or a converted directory).
--to=bert_jax (default) writes OUTPUT/params (orbax), OUTPUT/model_config.json and
OUTPUT/vocab.txt, which training accepts as --config.init_checkpoint=OUTPUT; --to=hf writes
config.json + model.safetensors + vocab.txt; --to=tf writes bert_config.json +
bert_model.ckpt.* + vocab.txt. The vocabulary is checked against the embedding rows.
"""
from __future__ import annotations

import os
import tempfile
import time
import zipfile

from bert_jax import checkpoints
from bert_jax import weights
from bert_jax.checkpoints import CheckpointError
from bert_jax.model import count_params

WRITERS = {"bert_jax": weights.save_converted, "hf": weights.save_hf,
           "tf": weights.save_tf}


def extract_zip(path: str, target: str) -> str:
  """Extracts a checkpoint .zip inside `target` (refusing members that would land outside
  it) and returns the directory that holds the checkpoint."""
  target = os.path.realpath(target)
  with zipfile.ZipFile(path) as z:
    for member in z.namelist():
      dest = os.path.realpath(os.path.join(target, member))
      if os.path.commonpath([dest, target]) != target:
        raise CheckpointError(f"{path}: member {member!r} would be written outside the "
                              "extraction directory; refusing this archive.")
    z.extractall(target)
  for root, _, files in os.walk(target):
    if {"config.json", "bert_config.json", weights.MODEL_CONFIG_FILE} & set(files):
      return root
  raise CheckpointError(f"{path}: no bert_config.json or config.json inside the archive.")


def convert(input_path: str, output: str, to: str = "bert_jax", vocab_file: str = "") -> str:
  """Reads `input_path`, checks the vocabulary, writes `output` in format `to`."""
  if to not in WRITERS:
    raise CheckpointError(f"--to={to!r}: use one of {sorted(WRITERS)}.")
  t0 = time.time()
  with tempfile.TemporaryDirectory() as tmp:
    src = extract_zip(input_path, tmp) if input_path.endswith(".zip") else input_path
    fmt = checkpoints.checkpoint_format(src)
    model_config, params = checkpoints.load_pretrained(src)
    vocab = vocab_file or checkpoints.vocab_file_of(src)
    if not vocab:
      raise CheckpointError(
          f"{input_path}: no vocab.txt beside the checkpoint; pass --vocab_file=PATH (the "
          "vocabulary the checkpoint was trained with).")
    weights.check_vocab(vocab, model_config)
    print(f"Read {fmt} checkpoint {input_path}: {count_params(params) / 1e6:.1f}M params, "
          f"L={model_config.num_layers} H={model_config.hidden_size} "
          f"A={model_config.num_heads}, heads: "
          f"{sorted(k for k in params if k != 'bert') or 'none'}", flush=True)
    WRITERS[to](output, model_config, params, vocab)
  print(f"Wrote {to} checkpoint {output} in {time.time() - t0:.1f} s", flush=True)
  return output


def main(argv):
  del argv
  from absl import flags, logging
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it opens at INFO.
  f = flags.FLAGS
  convert(f.input, f.output, f.to, f.vocab_file)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("input", None, "Checkpoint to read (HF dir, TF dir/prefix/.zip, ours).",
                      required=True)
  flags.DEFINE_string("output", None, "Directory to write.", required=True)
  flags.DEFINE_enum("to", "bert_jax", sorted(WRITERS), "Output format.")
  flags.DEFINE_string("vocab_file", "", "vocab.txt, if not beside the input checkpoint.")
  app.run(main)
