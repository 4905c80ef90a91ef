"""Fine-tuning features and length-bucketed batches, shared by GLUE, SQuAD and SWAG.

`encode_sentence_pairs` builds the original run_classifier.py inputs ([CLS] a [SEP] b
[SEP], `truncate_seq_pair`); `train_batch_indices` / `eval_batch_indices` order the rows
(grouped by length for training, sorted for evaluation) and `make_batch` pads a batch to a
fixed row count with `example_weight` 0 and cuts it to a bucket length (the longest row
rounded up to a multiple), so short-sentence tasks do not pay for max_seq_length and
padded evaluation stays exact. Feature dicts use the model's argument names:
input_ids, token_type_ids, attention_mask ([N, S] or [N, C, S]), labels, example_weight.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bert_jax.config import ConfigError

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
  """The original's _truncate_seq_pair: pop the last token of the longer list (of B on a
  tie) until the pair fits in max_length tokens. In place."""
  while len(tokens_a) + len(tokens_b) > max_length:
    (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def encode_sentence_pairs(tokenizer, texts_a: Sequence[str],
                          texts_b: Sequence[str] | None, max_seq_length: int
                          ) -> dict[str, np.ndarray]:
  """[CLS] a [SEP] (b [SEP]) per example, as the original run_classifier.py.

  Returns int32 input_ids / token_type_ids (0 for a, 1 for b) / attention_mask, each
  [N, max_seq_length], zero-padded. Single sentences are cut to max_seq_length - 2,
  pairs truncated with `truncate_seq_pair` to max_seq_length - 3.
  """
  if max_seq_length < 4:
    raise ConfigError(f"max_seq_length={max_seq_length}: need room for [CLS] a [SEP] b [SEP].")
  ids_a = tokenizer.encode_batch(list(texts_a))
  ids_b = tokenizer.encode_batch(list(texts_b)) if texts_b is not None else None
  n = len(ids_a)
  input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
  token_type_ids = np.zeros((n, max_seq_length), np.int32)
  attention_mask = np.zeros((n, max_seq_length), np.int32)
  for i in range(n):
    a = list(ids_a[i])
    if ids_b is None:
      a = a[:max_seq_length - 2]
      ids = [tokenizer.cls_id, *a, tokenizer.sep_id]
    else:
      b = list(ids_b[i])
      truncate_seq_pair(a, b, max_seq_length - 3)
      ids = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
      token_type_ids[i, len(a) + 2:len(ids)] = 1
    input_ids[i, :len(ids)] = ids
    attention_mask[i, :len(ids)] = 1
  return {"input_ids": input_ids, "token_type_ids": token_type_ids,
          "attention_mask": attention_mask}


# ---------------------------------------------------------------------------------------
# Batching with length buckets
# ---------------------------------------------------------------------------------------

def num_examples(features: dict[str, Any]) -> int:
  return len(features["input_ids"])


def sequence_lengths(features: dict[str, Any]) -> np.ndarray:
  """Real length of every example: [N] from attention_mask [N, S] or [N, C, S] (max over C)."""
  mask = np.asarray(features["attention_mask"])
  lengths = mask.reshape(mask.shape[0], -1, mask.shape[-1]).sum(-1).max(-1)
  return lengths.astype(np.int64)


def bucket_length(length: int, multiple: int, max_length: int) -> int:
  """`length` rounded up to a multiple of `multiple`, at most max_length."""
  if multiple <= 0:
    return max_length
  return int(min(max_length, max(multiple, -(-int(length) // multiple) * multiple)))


def batch_keys(features: dict[str, Any]) -> list[str]:
  """Feature keys that go to the device: numeric numpy arrays with one row per example."""
  n = num_examples(features)
  return [k for k, v in features.items()
          if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.shape[:1] == (n,)]


def make_batch(features: dict[str, Any], indices: np.ndarray, batch_size: int,
               bucket_multiple: int, sequence_keys: Sequence[str] = MODEL_INPUTS,
               keys: Sequence[str] | None = None, lengths: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
  """Rows `indices` padded to `batch_size` rows (example_weight 0) and cut to a bucket.

  Padding rows are all zeros (attention_mask 0); sequence keys lose every position past
  the bucket length, which holds only padding for the rows of this batch.
  """
  keys = list(keys if keys is not None else batch_keys(features))
  lengths = sequence_lengths(features) if lengths is None else lengths
  max_len = np.asarray(features["input_ids"]).shape[-1]
  cut = bucket_length(int(lengths[indices].max()) if len(indices) else 1,
                      bucket_multiple, max_len)
  pad = batch_size - len(indices)
  if pad < 0:
    raise ValueError(f"{len(indices)} rows do not fit in a batch of {batch_size}")
  batch = {}
  for k in keys:
    x = np.asarray(features[k])[indices]
    if k in sequence_keys:
      x = x[..., :cut]
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    batch[k] = x
  weight = (np.asarray(features["example_weight"], np.float32)[indices]
            if "example_weight" in features else np.ones(len(indices), np.float32))
  batch["example_weight"] = np.concatenate([weight, np.zeros(pad, np.float32)])
  return batch


def train_batch_indices(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                        window: int) -> list[np.ndarray]:
  """One epoch of shuffled batches; with window>0, rows are sorted by length inside
  windows of `window` batches and the batches shuffled (Hugging Face's group_by_length),
  so each batch holds similar lengths. The last batch may be short (padded by make_batch)."""
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(lengths))
  if window > 0:
    span = window * batch_size
    order = np.concatenate([
        chunk[np.argsort(-lengths[chunk], kind="stable")]
        for chunk in np.array_split(order, max(1, -(-len(order) // span)))])
  batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
  if window > 0:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches


def eval_batch_indices(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
  """All rows once, sorted by length (fewest padded positions); outputs are put back in
  the original order by `predict`."""
  order = np.argsort(-lengths, kind="stable")
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
