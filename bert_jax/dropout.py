"""Dropout whose mask XLA fuses into one elementwise loop on every backend.

`flax.linen.Dropout` draws its mask with `jax.random.bernoulli`, whose Threefry-2x32 hash
JAX lowers on CPU as a rolled 5-iteration loop: every iteration reads and writes the full
[batch, heads, seq, seq] counter arrays, and no fusion crosses the loop. At BERT-Base
B2 S512 that made dropout cost 30% of the train step on the CI CPU (3.75 s vs 2.62 s
without dropout, benchmarks/train_step.py). Here the same hash (Salmon et al. 2011, the
rounds and key schedule of JAX's threefry2x32) is written out unrolled, and the mask is a
pure function of (key, global element index): XLA fuses hash, compare and select, and the
mask is identical however the array is sharded (a mesh changes nothing, as with JAX's
partitionable Threefry). Keep probability is exact to 2^-32 (an integer threshold on 32
random bits), as flax's (a float uniform below keep_prob) is to 2^-23.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x, r: int):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
  """Threefry-2x32 with 20 rounds, unrolled: uint32 key words, uint32 counter arrays ->
  two uint32 arrays. Bit for bit `jax.extend.random.threefry_2x32`."""
  ks = (k0, k1, k0 ^ k1 ^ _PARITY)
  x0 = x0 + ks[0]
  x1 = x1 + ks[1]
  for group in range(5):
    for r in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = _rotl(x1, r) ^ x0
    x0 = x0 + ks[(group + 1) % 3]
    x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def _raw_key(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return key.reshape(-1)[-2:].astype(jnp.uint32)


def _flat_index(shape: tuple[int, ...], axes: range) -> jax.Array:
  """uint32[shape]: the row-major index of each element over the dimensions `axes`."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(axes):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  return index


def counter_words(shape: tuple[int, ...], word: int = 2**32) -> tuple[jax.Array, jax.Array]:
  """(low, high) uint32[shape]: a distinct pair per element; the trailing dimensions
  whose size stays below `word` number the low word, the rest the high word."""
  split = len(shape)
  trailing = 1
  while split > 0 and trailing * shape[split - 1] < word:
    split -= 1
    trailing *= shape[split]
  if math.prod(shape[:split]) >= word:
    raise ValueError(f"dropout over shape {shape}: a dimension of 2**32 or more elements")
  return _flat_index(shape, range(split, len(shape))), _flat_index(shape, range(split))


def keep_mask(key: jax.Array, shape: tuple[int, ...], keep_prob: float) -> jax.Array:
  """bool[shape], each True with probability keep_prob, from key and the element's
  index alone (so that any sharding of the array gives the same mask).

  The index is a 64-bit counter in two 32-bit words: the trailing dimensions whose size
  fits 32 bits give the low word, the leading ones the high word (a pod-sized global
  batch of attention probabilities has more than 2^32 elements).
  """
  low, high = counter_words(shape)
  k = _raw_key(key)
  bits, _ = threefry2x32(k[0], k[1], low, high)
  threshold = min(int(round(keep_prob * 2**32)), 2**32 - 1)
  return bits < np.uint32(threshold)


class Dropout(nn.Module):
  """Inverted dropout like `flax.linen.Dropout` (same "dropout" rng stream, same
  x / keep_prob scaling), with the fused, sharding-invariant mask of `keep_mask`."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    keep_prob = 1.0 - self.rate
    keep = keep_mask(self.make_rng("dropout"), x.shape, keep_prob)
    return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))
