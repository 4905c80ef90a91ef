"""The epoch permutation of the pre-training records, for a whole batch of positions at once.

`index_shuffle(indices, max_index, seed)` gives the same numbers as Grain's
`grain.experimental.index_shuffle` (which the pipeline called one index at a time before):
a small Simon-style Feistel cipher over the fewest even number of bits (>= 16) that holds
`max_index`, keyed by `std::seed_seq{seed}`, re-applied to any output above `max_index`
(cycle walking), so every epoch is a bijection of [0, max_index] computed per position
with no table. Written here in NumPy so the input pipeline needs neither Grain's import
(which loads JAX: a second of start-up in every data process) nor a Python call per record.
"""
from __future__ import annotations

import math

import numpy as np

_M32 = 0xFFFFFFFF


def seed_seq_generate(seed: int, n: int) -> list[int]:
  """C++ `std::seed_seq{seed}.generate(n words)`, as the standard specifies it."""
  v = [seed & _M32]
  s = len(v)
  out = [0x8B8B8B8B] * n
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
  p = (n - t) // 2
  q = p + t
  m = max(s + 1, n)
  mix = lambda x: x ^ (x >> 27)  # noqa: E731
  for k in range(m):
    r1 = (1664525 * mix(out[k % n] ^ out[(k + p) % n] ^ out[(k - 1) % n])) & _M32
    r2 = (r1 + (s if k == 0 else (k % n + v[k - 1] if k <= s else k % n))) & _M32
    out[(k + p) % n] = (out[(k + p) % n] + r1) & _M32
    out[(k + q) % n] = (out[(k + q) % n] + r2) & _M32
    out[k % n] = r2
  for k in range(m, m + n):
    r3 = (1566083941 * mix((out[k % n] + out[(k + p) % n] + out[(k - 1) % n]) & _M32)) & _M32
    r4 = (r3 - k % n) & _M32
    out[(k + p) % n] ^= r3
    out[(k + q) % n] ^= r4
    out[k % n] = r4
  return out


def _block_bits(max_index: int) -> int:
  # As Grain: ceil(log2(max_index)) rounded up to even, at least 16, at most 64 (so a power
  # of two max_index gets one bit too few, and its top index is walked from a truncation).
  bits = int(math.ceil(math.log2(max_index)))
  return min(64, max(bits + bits % 2, 16))


def index_shuffle(indices, max_index: int, seed: int, rounds: int = 4) -> np.ndarray:
  """Positions of `indices` (each in [0, max_index]) in the permutation keyed by `seed`."""
  idx = np.asarray(indices, np.uint64)
  if rounds < 4 or rounds % 2:
    raise ValueError(f"rounds={rounds}: must be an even integer >= 4.")
  if idx.size and (int(idx.max()) > max_index or max_index < 0):
    raise ValueError(f"indices must be in [0, max_index={max_index}].")
  if max_index == 0:
    return np.zeros(idx.shape, np.int64)
  w = _block_bits(max_index) // 2
  mask = np.uint64((1 << w) - 1)
  keys = [np.uint64(k & ((1 << w) - 1)) for k in seed_seq_generate(seed, rounds)]
  shifts = {r: (np.uint64(r), np.uint64(w - r)) for r in (1, 2, 8)}

  def rotl(x, r):
    left, right = shifts[r]
    return ((x << left) | (x >> right)) & mask

  def f(x):
    return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

  def encrypt(v):
    left, right = (v >> np.uint64(w)) & mask, v & mask
    for i in range(0, rounds, 2):
      left = left ^ f(right) ^ keys[i]
      right = right ^ f(left) ^ keys[i + 1]
    return (left << np.uint64(w)) | right

  out = encrypt(idx)
  todo = out > np.uint64(max_index)
  while todo.any():  # cycle walking: re-encrypt until inside [0, max_index]
    out[todo] = encrypt(out[todo])
    todo = out > np.uint64(max_index)
  return out.astype(np.int64)
