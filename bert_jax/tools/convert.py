"""Converts a pretrained BERT checkpoint to ours (orbax), Hugging Face or Google TF format.

python -m bert_jax.tools.convert --input=uncased_L-12_H-768_A-12 --output=ckpt/bert_base
python -m bert_jax.tools.convert --input=ckpt/bert_base --output=hf/bert_base --to=hf

--input: anything `checkpoints.resolve` accepts (a Hugging Face directory or Hub id, a
Google TF checkpoint directory / prefix / .zip as Google distributes it, a converted
directory or a bert_jax run workdir), local or gs://.
--to=bert_jax (default) writes OUTPUT/params (orbax), OUTPUT/model_config.json and
OUTPUT/vocab.txt, which training accepts as --config.init_checkpoint=OUTPUT; --to=hf writes
config.json + model.safetensors + vocab.txt; --to=tf writes bert_config.json +
bert_model.ckpt.* + vocab.txt. The vocabulary is checked against the embedding rows.
"""
from __future__ import annotations

import time

from bert_jax import checkpoints
from bert_jax import weights
from bert_jax.checkpoints import CheckpointError
from bert_jax.model import count_params

WRITERS = {"bert_jax": weights.save_converted, "hf": weights.save_hf,
           "tf": weights.save_tf}


def extract_zip(path: str, target: str) -> str:
  """Extracts a checkpoint .zip inside `target` (weights.extract_zip)."""
  return weights.extract_zip(path, target)


def convert(input_path: str, output: str, to: str = "bert_jax", vocab_file: str = "") -> str:
  """Reads `input_path` (anything checkpoints.resolve accepts), checks the vocabulary,
  writes `output` in format `to` with the vocabulary and the casing the input says."""
  if to not in WRITERS:
    raise CheckpointError(f"--to={to!r}: use one of {sorted(WRITERS)}.")
  t0 = time.time()
  resolved = checkpoints.resolve(input_path)
  model_config, params = checkpoints.load_pretrained(input_path)
  vocab = vocab_file or resolved.vocab_file
  if not vocab:
    raise CheckpointError(
        f"{input_path}: no vocab.txt beside the checkpoint; pass --vocab_file=PATH (the "
        "vocabulary the checkpoint was trained with).")
  weights.check_vocab(vocab, model_config)
  print(f"Read {resolved.format} checkpoint {input_path}: {count_params(params) / 1e6:.1f}M "
        f"params, L={model_config.num_layers} H={model_config.hidden_size} "
        f"A={model_config.num_heads}, heads: "
        f"{sorted(k for k in params if k != 'bert') or 'none'}", flush=True)
  WRITERS[to](output, model_config, params, vocab, do_lower_case=resolved.do_lower_case)
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
  flags.DEFINE_string("input", None, "Checkpoint to read (HF dir or Hub id, TF dir/prefix/.zip, ours).",
                      required=True)
  flags.DEFINE_string("output", None, "Directory to write.", required=True)
  flags.DEFINE_enum("to", "bert_jax", sorted(WRITERS), "Output format.")
  flags.DEFINE_string("vocab_file", "", "vocab.txt, if not beside the input checkpoint.")
  app.run(main)
