"""Batched, sharded prediction over feature dicts, in the examples' original order.

`predict` runs a jitted predict_fn over length-sorted, bucketed batches (each host feeds
its rows of every global batch) and puts the outputs back in order; `predict_resumable`
does the same while keeping finished batches' outputs in partial files, so a long
test-set prediction interrupted by a crash or preemption resumes where it stopped.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import jax
import numpy as np

from bert_jax import metrics, paths, reruns, train_lib
from bert_jax.data.batching import (MODEL_INPUTS, eval_batch_indices, make_batch,
                                    sequence_lengths)


def _pad_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  if x.shape[1:] == shape:
    return x
  widths = [(0, 0)] + [(0, t - s) for s, t in zip(x.shape[1:], shape)]
  return np.pad(x, widths)


def predict(predict_fn: Callable, params, features: dict[str, Any], batch_size: int,
            mesh, bucket_multiple: int, sequence_keys: Sequence[str] = MODEL_INPUTS):
  """Model outputs for every example, in the original order, as a numpy pytree [N, ...].

  Batches are sorted by length and cut to buckets; outputs with a length axis (e.g.
  SQuAD logits [N, S]) are right-padded with 0 to the longest bucket.
  """
  lengths = sequence_lengths(features)
  keys = [k for k in MODEL_INPUTS if k in features]
  n_local = batch_size // jax.process_count()
  lo = jax.process_index() * n_local
  chunks, order = [], []
  for idx in eval_batch_indices(lengths, batch_size):
    batch = make_batch(features, idx, batch_size, bucket_multiple, sequence_keys, keys,
                       lengths)
    local = {k: v[lo:lo + n_local] for k, v in batch.items()}
    out = train_lib.gather_to_host(predict_fn(params, train_lib.global_batch(local, mesh)))
    chunks.append(jax.tree_util.tree_map(lambda x, m=len(idx): x[:m], out))
    order.append(idx)
  return _stack_outputs(chunks, order)


PREDICT_CHUNK_ROWS = 4096  # rows of outputs per partial file


def _encode_outputs(out) -> tuple[str, list[np.ndarray]]:
  if isinstance(out, (tuple, list)):
    return type(out).__name__, [np.asarray(x) for x in out]
  return "array", [np.asarray(out)]


def _decode_outputs(kind: str, leaves: list[np.ndarray]):
  if kind == "array":
    return leaves[0]
  return tuple(leaves) if kind == "tuple" else list(leaves)


def predict_resumable(predict_fn: Callable, params, features: dict[str, Any],
                      batch_size: int, mesh, bucket_multiple: int,
                      sequence_keys: Sequence[str], partial_dir: str, key: str):
  """`predict`, keeping the outputs of finished batches in partial_dir (one .npz per
  ~PREDICT_CHUNK_ROWS rows, each written atomically), so a crash or preemption during a
  long test-set prediction loses at most one chunk and a rerun with the same `key`
  (params and data) predicts only the rest. Same batches, same programs: the outputs
  equal `predict`'s. The caller removes partial_dir once the files are written."""
  lengths = sequence_lengths(features)
  keys = [k for k in MODEL_INPUTS if k in features]
  n_local = batch_size // jax.process_count()
  lo = jax.process_index() * n_local
  batches = eval_batch_indices(lengths, batch_size)
  per_chunk = max(1, PREDICT_CHUNK_ROWS // batch_size)
  key = f"{key}; {per_chunk} batch(es) of {batch_size} per chunk"
  key_file = paths.join(partial_dir, "key.json")
  if jax.process_index() == 0:  # every host reads the chunks; process 0 writes them
    if paths.exists(key_file) and paths.read_json(key_file).get("key") != key:
      paths.rmtree(partial_dir)  # outputs of other params or data: start again
    if not paths.exists(key_file):
      paths.write_json(key_file, {"key": key})
  from bert_jax import distributed
  distributed.barrier(reruns.barrier_id("predict_partial", partial_dir, key))
  chunks, order, kind, done = [], [], "array", 0
  for c, start in enumerate(range(0, len(batches), per_chunk)):
    chunk_file = paths.join(partial_dir, f"chunk_{c:06d}.npz")
    part = batches[start:start + per_chunk]
    if paths.exists(chunk_file):
      with np.load(io.BytesIO(paths.read_bytes(chunk_file))) as z:
        kind = str(z["kind"])
        for j, idx in enumerate(part):
          n_leaves = int(z["n_leaves"])
          chunks.append(_decode_outputs(kind, [z[f"b{j}_{l}"] for l in range(n_leaves)]))
          order.append(idx)
      done += 1
      continue
    saved: dict[str, np.ndarray] = {}
    for j, idx in enumerate(part):
      batch = make_batch(features, idx, batch_size, bucket_multiple, sequence_keys, keys,
                         lengths)
      local = {k: v[lo:lo + n_local] for k, v in batch.items()}
      out = train_lib.gather_to_host(predict_fn(params, train_lib.global_batch(local, mesh)))
      out = jax.tree_util.tree_map(lambda x, m=len(idx): np.asarray(x)[:m], out)
      kind, leaves = _encode_outputs(out)
      saved.update({f"b{j}_{l}": x for l, x in enumerate(leaves)})
      saved["n_leaves"] = np.asarray(len(leaves))
      chunks.append(out)
      order.append(idx)
    if jax.process_index() == 0:
      buf = io.BytesIO()
      np.savez(buf, kind=np.asarray(kind), **saved)
      paths.write_bytes(chunk_file, buf.getvalue())
  if done:
    metrics.log(f"resumed prediction: {done} of {-(-len(batches) // per_chunk)} chunks "
                f"were already in {partial_dir}")
  return _stack_outputs(chunks, order)


def _stack_outputs(chunks: list, order: list[np.ndarray]):
  order = np.concatenate(order)
  inverse = np.empty_like(order)
  inverse[order] = np.arange(len(order))

  def stack(*xs):
    shape = tuple(max(s) for s in zip(*(x.shape[1:] for x in xs)))
    return np.concatenate([_pad_to(x, shape) for x in xs])[inverse]

  return jax.tree_util.tree_map(stack, *chunks)
