"""Masked-LM predictions, as the original `create_masked_lm_predictions`, for a whole batch.

Per example, exactly the original's rule:
- candidates are all tokens except [CLS]/[SEP] (and padding); with whole-word masking a
  candidate is a whole word: a word-start token plus the '##' continuations after it;
- num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))
  (len(tokens) counts [CLS] and the two [SEP], Python's round-half-to-even);
- candidates are taken in a random order; a word that would overshoot num_to_predict is
  skipped and the next one tried;
- each chosen token: 80% [MASK], else 50/50 unchanged or a random id in [0, vocab_size)
  (the original draws from the whole vocabulary too);
- positions are sorted and padded to max_predictions_per_seq with id 0 and weight 0.
One detail differs on purpose: a word never spans a [SEP] (the original would glue a
'##' piece that starts segment B after truncation onto A's last word).

The randomness is counter-based: every draw is a hash of (seed, example key, position,
purpose), so an example's mask depends on its key alone, never on batch size, host count,
thread timing or what came before. The pipeline uses the global stream position as key:
the same example gets fresh masks in every epoch (dynamic masking), reproducibly.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)

# Independent random streams per position.
_ORDER, _MASK_OR_NOT, _KEEP_OR_RANDOM, _RANDOM_ID = 0, 1, 2, 3
# Per stream: splitmix64((position << 2) | stream) for positions 0, 1, ... (_counter_hash).
_COUNTER_HASH = [np.zeros(0, _U64) for _ in range(4)]


def splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser: a bijective, well-mixing hash of uint64 (wraps on purpose)."""
  z = np.asarray(x, _U64) + _GOLDEN
  z = (z ^ (z >> _U64(30))) * _M1
  z = (z ^ (z >> _U64(27))) * _M2
  return z ^ (z >> _U64(31))


def example_keys(seed: int, indices: np.ndarray | Sequence[int]) -> np.ndarray:
  """One uint64 key per example from (seed, example index)."""
  with np.errstate(over="ignore"):
    return splitmix64(splitmix64(_U64(seed % 2**64)) ^ np.asarray(indices, np.int64).astype(_U64))


def _counter_hash(stream: int, length: int) -> np.ndarray:
  """splitmix64((position << 2) | stream) for positions [0, >= length): the per-position
  half of every draw, computed once per stream and kept."""
  table = _COUNTER_HASH[stream]  # (a local reference: another thread may swap in a shorter one)
  if length > len(table):
    table = splitmix64((np.arange(max(length, 512), dtype=_U64) << _U64(2)) | _U64(stream))
    _COUNTER_HASH[stream] = table
  return table


def _bits(keys: np.ndarray, length: int, stream: int) -> np.ndarray:
  """uint64 [b, length] random bits for (key, position, stream)."""
  return splitmix64(keys[:, None] + _counter_hash(stream, length)[None, :length])


def _bits_at(keys: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
  """`_bits` at one position per key: uint64 [n] for (keys[i], positions[i], stream)."""
  positions = np.asarray(positions)
  return splitmix64(keys + _counter_hash(stream, int(positions.max(initial=0)) + 1)[positions])


def _unit(bits: np.ndarray) -> np.ndarray:
  """Random bits -> float64 uniform in [0, 1) from their top 53 bits."""
  return (bits >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _uniform(keys: np.ndarray, length: int, stream: int) -> np.ndarray:
  return _unit(_bits(keys, length, stream))


def _uniform_at(keys: np.ndarray, positions: np.ndarray, stream: int) -> np.ndarray:
  return _unit(_bits_at(keys, positions, stream))


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  """What masking needs to know about the vocabulary and the recipe."""
  vocab_size: int
  mask_id: int
  cls_id: int
  sep_id: int
  pad_id: int
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  # bool [vocab_size]: token starts a word (not a '##' piece); None = token-level masking.
  word_start: np.ndarray | None = None

  @classmethod
  def from_tokenizer(cls, tokenizer, *, max_predictions_per_seq: int, masked_lm_prob: float,
                     whole_word_mask: bool) -> "MaskingSpec":
    """Special ids and (for whole-word masking) the word-start table of a tokenizer."""
    word_start = None
    if whole_word_mask:
      pieces = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
      word_start = np.array([tokenizer.is_word_start(p) for p in pieces], bool)
    return cls(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
               cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
               max_predictions_per_seq=max_predictions_per_seq,
               masked_lm_prob=masked_lm_prob, word_start=word_start)


def num_to_predict(lengths: np.ndarray, spec: MaskingSpec) -> np.ndarray:
  """min(max_predictions, max(1, round(len * prob))) per example (round half to even)."""
  k = np.rint(np.asarray(lengths, np.float64) * spec.masked_lm_prob).astype(np.int64)
  return np.minimum(spec.max_predictions_per_seq, np.maximum(1, k))


def mask_batch(input_ids: np.ndarray, lengths: np.ndarray, keys: np.ndarray,
               spec: MaskingSpec) -> dict[str, np.ndarray]:
  """Masks a padded batch.

  Args:
    input_ids: int [b, S] `[CLS] A [SEP] B [SEP]` then padding.
    lengths: int [b] number of real tokens per row.
    keys: uint64 [b] per-example random keys (see `example_keys`).
    spec: vocabulary ids and the masking recipe.

  Returns:
    input_ids (masked, int32 [b, S]), masked_lm_positions / masked_lm_ids (int32 [b, P]),
    masked_lm_weights (float32 [b, P]).
  """
  ids = np.asarray(input_ids)
  b, seq_len = ids.shape
  num_preds = spec.max_predictions_per_seq
  rows = np.arange(b)[:, None]
  pos = np.arange(seq_len)[None, :]
  lengths = np.asarray(lengths)
  cand = (pos < lengths[:, None]) & (ids != spec.cls_id) & (ids != spec.sep_id) & (
      ids != spec.pad_id)
  if spec.word_start is None:
    start = cand
  else:
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    start = cand & (spec.word_start[ids] | ~prev_cand)
  k = num_to_predict(lengths, spec)

  # Random order of the candidate words: sort their start positions by a random key (the
  # 53 bits of `_uniform`, as integers: the same order; non-candidates last).
  with np.errstate(over="ignore"):
    order_key = np.where(start, _bits(keys, seq_len, _ORDER) >> _U64(11), _U64(1 << 53))
  if spec.word_start is None:  # every word is one token: the k first in random order.
    chosen = _first_k(order_key, start, k, num_preds)
  else:
    order = np.argsort(order_key, axis=1, kind="stable")
    # Word sizes at their start positions: distance to the next start or non-candidate.
    boundary = start | ~cand
    nxt = np.where(boundary, pos, seq_len)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    next_boundary = np.concatenate([nxt[:, 1:], np.full((b, 1), seq_len)], axis=1)
    size = np.where(start, next_boundary - pos, 0)
    sizes_in_order = np.take_along_axis(size, order, axis=1)
    count = np.zeros(b, np.int64)
    taken = np.zeros((b, seq_len), bool)
    for j in range(int(start.sum(axis=1).max(initial=0))):
      s = sizes_in_order[:, j]
      take = (s > 0) & (count + s <= k)  # skip a word that would overshoot, as the original
      taken[:, j] = take
      count += np.where(take, s, 0)
      if (count >= k).all():
        break
    chosen_start = np.zeros_like(start)
    chosen_start[rows, order] = taken
    # A token is chosen when the start of its word is.
    word_of = np.maximum.accumulate(np.where(start, pos, 0), axis=1)
    chosen = cand & np.take_along_axis(chosen_start, word_of, axis=1)

  # The chosen tokens (at most num_preds per row), row by row in increasing position:
  # their slot in the row's predictions is how many chosen tokens precede them.
  flat = np.flatnonzero(chosen)
  r, p = np.divmod(flat, seq_len)
  per_row = np.bincount(r, minlength=b)
  slot = np.arange(len(flat)) - (np.cumsum(per_row) - per_row)[r]
  original = ids.reshape(-1)[flat]
  # Each chosen token's draws: the streams of `_bits` at its (key, position) alone.
  with np.errstate(over="ignore"):
    token_keys = keys[r]
    to_mask = _uniform_at(token_keys, p, _MASK_OR_NOT) < 0.8
    keep = _uniform_at(token_keys, p, _KEEP_OR_RANDOM) < 0.5
    random_ids = (_bits_at(token_keys, p, _RANDOM_ID) % _U64(spec.vocab_size)).astype(np.int32)
  out_ids = ids.astype(np.int32)  # a copy
  out_ids.reshape(-1)[flat] = np.where(to_mask, spec.mask_id,
                                       np.where(keep, original, random_ids))
  positions = np.zeros((b, num_preds), np.int32)
  label_ids = np.zeros((b, num_preds), np.int32)
  weights = np.zeros((b, num_preds), np.float32)
  positions[r, slot] = p
  label_ids[r, slot] = original
  weights[r, slot] = 1.0
  return {"input_ids": out_ids, "masked_lm_positions": positions,
          "masked_lm_ids": label_ids, "masked_lm_weights": weights}


def _first_k(order_key: np.ndarray, start: np.ndarray, k: np.ndarray,
             num_preds: int) -> np.ndarray:
  """bool [b, S]: per row the k[row] candidates with the smallest keys, i.e. ranks < k of
  a stable argsort of `order_key`, found by a partial sort (k <= num_preds is small)."""
  b, seq_len = order_key.shape
  kk = min(num_preds, seq_len)
  smallest = np.partition(order_key, kk - 1, axis=1)[:, :kk] if kk < seq_len else order_key
  smallest = np.sort(smallest, axis=1)
  threshold = smallest[np.arange(b), np.minimum(k, kk) - 1]
  chosen = start & (order_key <= threshold[:, None])
  tied = np.flatnonzero(np.count_nonzero(chosen, axis=1) > k)  # equal keys (~2^-40)
  for row in tied:  # the stable argsort's choice: the lowest positions among equals
    order = np.argsort(order_key[row], kind="stable")
    chosen[row] = False
    chosen[row, order[:k[row]]] = True
    chosen[row] &= start[row]
  return chosen
