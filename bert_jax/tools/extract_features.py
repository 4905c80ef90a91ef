"""Per-token vectors of chosen encoder layers, as the original BERT `extract_features.py`.

  python -m bert_jax.tools.extract_features --input_file=input.txt --output_file=out.jsonl \
      --init_checkpoint=PATH --layers=-1,-2,-3,-4 --max_seq_length=128

Input: one example per line; a sentence pair is written "first ||| second" (pairs and
single sentences may mix, as in the original). Output: one
JSON line per example, the original's format:
  {"linex_index": i, "features": [{"token": "[CLS]", "layers": [{"index": -1,
   "values": [...]}, ...]}, ...]}
Layer indices count encoder layers as the original does (-1 = the last layer, 0 = the
first layer's output); values are rounded to 6 decimals, as there. The checkpoint is
any spelling `checkpoints.resolve` accepts (Hugging Face directory or Hub id, Google TF
directory / prefix / .zip, a converted directory or a bert_jax workdir), local or gs://.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import jax
import numpy as np

from bert_jax import checkpoints
from bert_jax import model as model_lib
from bert_jax import paths
from bert_jax.finetune import encode_sentence_pairs
from bert_jax.tools.predict import PredictError, read_examples
from bert_jax.tokenization import load_tokenizer


def parse_layers(spec: str, num_layers: int) -> list[int]:
  """'-1,-2' -> [-1, -2], each checked against the model's num_layers."""
  try:
    layers = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError as e:
    raise PredictError(f"--layers={spec!r}: use comma-separated integers, e.g. -1,-2,-3,-4."
                       ) from e
  bad = [l for l in layers if not -num_layers <= l < num_layers]
  if bad or not layers:
    raise PredictError(f"--layers={spec!r}: this model has {num_layers} layers; use indices "
                       f"in [{-num_layers}, {num_layers - 1}] (-1 = last).")
  return layers


def encode_mixed(tokenizer, texts_a: Sequence[str], texts_b: Sequence[str | None] | None,
                 max_seq_length: int) -> dict[str, np.ndarray]:
  """Model inputs where some examples are pairs (texts_b[i] set) and some single."""
  if texts_b is None:
    return encode_sentence_pairs(tokenizer, texts_a, None, max_seq_length)
  pairs = [i for i, b in enumerate(texts_b) if b is not None]
  singles = [i for i, b in enumerate(texts_b) if b is None]
  out = {k: np.zeros((len(texts_a), max_seq_length), np.int32)
         for k in ("input_ids", "token_type_ids", "attention_mask")}
  for idx, b in ((pairs, [texts_b[i] for i in pairs]), (singles, None)):
    if idx:
      part = encode_sentence_pairs(tokenizer, [texts_a[i] for i in idx], b, max_seq_length)
      for k in out:
        out[k][idx] = part[k]
  return out


def make_encoder_fn(model_cfg):
  """jitted (params, ids, types, mask) -> hidden states [L+1, B, S, H] (float32)."""
  cfg = model_lib.BertConfig.from_config(model_cfg)
  module = model_lib.BertModel(cfg, add_pooler=False)

  @jax.jit
  def fn(params, input_ids, token_type_ids, attention_mask):
    _, _, hidden = module.apply({"params": params}, input_ids, token_type_ids,
                                attention_mask, deterministic=True, return_all_layers=True)
    return hidden.astype(np.float32)

  return fn


def extract(params, model_cfg, tokenizer, texts_a: Sequence[str],
            texts_b: Sequence[str | None] | None, layers: Sequence[int], max_seq_length: int,
            batch_size: int = 8):
  """Yields (tokens, {layer: [len, H] array}) per example, in input order."""
  features = encode_mixed(tokenizer, texts_a, texts_b, max_seq_length)
  fn = make_encoder_fn(model_cfg)
  n = len(texts_a)
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in features.items()}
    m = len(batch["input_ids"])
    if m < batch_size:  # one compiled shape
      batch = {k: np.concatenate([v, np.zeros((batch_size - m, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    hidden = np.asarray(fn(params, batch["input_ids"], batch["token_type_ids"],
                           batch["attention_mask"]))[1:]  # drop the embeddings
    for j in range(m):
      length = int(batch["attention_mask"][j].sum())
      tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][j, :length])
      yield tokens, {l: hidden[l, j, :length] for l in layers}


def to_json(index: int, tokens: Sequence[str], vectors: dict[int, np.ndarray]) -> dict:
  """The original's output record for one example."""
  return {"linex_index": index, "features": [
      {"token": tok, "layers": [{"index": l, "values": [round(float(x), 6) for x in v[t]]}
                                for l, v in vectors.items()]}
      for t, tok in enumerate(tokens)]}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m bert_jax.tools.extract_features",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input_file", required=True)
  p.add_argument("--output_file", required=True)
  p.add_argument("--init_checkpoint", required=True)
  p.add_argument("--vocab_file", default="", help="default: vocab.txt beside the checkpoint")
  p.add_argument("--do_lower_case", default="auto", choices=("auto", "true", "false"),
                 help="auto: the checkpoint's casing where it says, else true")
  p.add_argument("--layers", default="-1,-2,-3,-4")
  p.add_argument("--max_seq_length", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=8)
  args = p.parse_args(argv)
  try:
    resolved = checkpoints.resolve(args.init_checkpoint)
    lower = None if args.do_lower_case == "auto" else args.do_lower_case == "true"
    model_cfg, params = checkpoints.load_pretrained(args.init_checkpoint, lower)
    if lower is None:
      lower = True if resolved.do_lower_case is None else resolved.do_lower_case
    layers = parse_layers(args.layers, int(model_cfg.num_layers))
    if args.max_seq_length > model_cfg.max_position_embeddings:
      raise PredictError(f"--max_seq_length={args.max_seq_length} exceeds the checkpoint's "
                         f"max_position_embeddings={model_cfg.max_position_embeddings}.")
    vocab = args.vocab_file or resolved.vocab_file
    if not vocab:
      raise PredictError(f"{args.init_checkpoint} has no vocab.txt beside it: pass "
                         "--vocab_file=PATH/vocab.txt.")
    tokenizer = load_tokenizer(vocab, lower)
    _, texts_a, texts_b = read_examples(args.input_file, allow_mixed=True)
  except (PredictError, checkpoints.CheckpointError, ValueError) as e:
    print(f"bert_jax.tools.extract_features: error: {e}", file=sys.stderr)
    return 2
  t0 = time.time()
  paths.makedirs(paths.as_path(args.output_file).parent)
  with paths.open(args.output_file, "w") as f:
    for i, (tokens, vectors) in enumerate(extract(
        params["bert"], model_cfg, tokenizer, texts_a, texts_b, layers,
        args.max_seq_length, args.batch_size)):
      f.write(json.dumps(to_json(i, tokens, vectors)) + "\n")
  n = len(texts_a)
  print(f"{n} examples, layers {layers} -> {args.output_file} "
        f"({n / max(time.time() - t0, 1e-9):.1f} examples/s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
