"""bert_jax/dropout.py: JAX's Threefry bit for bit, the right keep rate, the same mask on
any mesh, and flax's inverted-dropout semantics."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import dropout
from _numerics import EPS32


def test_threefry_equals_jax():
  key = jnp.array([0xDEADBEEF, 42], jnp.uint32)
  x0 = jnp.arange(4096, dtype=jnp.uint32) * np.uint32(2654435761)
  x1 = jnp.arange(4096, 8192, dtype=jnp.uint32)
  y0, y1 = jax.jit(dropout.threefry2x32)(key[0], key[1], x0, x1)
  ref = threefry_2x32(key, jnp.concatenate([x0, x1]))
  np.testing.assert_array_equal(np.concatenate([y0, y1]), np.asarray(ref))


def test_keep_rate_independence_and_determinism():
  shape = (8, 12, 128, 128)  # BERT-Base attention probabilities, 1.57M elements
  m = np.asarray(jax.jit(lambda k: dropout.keep_mask(k, shape, 0.9))(jax.random.PRNGKey(3)))
  n = m.size
  # Binomial(n, 0.9): 6 standard deviations is 0.0014.
  assert abs(m.mean() - 0.9) < 6 * np.sqrt(0.09 / n)
  # No structure along any axis: every row, head and column keeps ~90%. The smallest
  # slice (one of 128 columns) has 12,288 draws: std 0.0027, so 0.01 is 3.7 sigma
  # (a fixed key: the same draw every run; with a random key P(any of 128 fails) ~ 3%).
  for axis in range(4):
    means = m.mean(axis=tuple(a for a in range(4) if a != axis))
    assert np.all(np.abs(means - 0.9) < 0.01), axis
  # Neighbouring elements are independent: P(both kept) = 0.81; 1.56M pairs: std 3.1e-4,
  # 0.002 is 6.4 sigma.
  assert abs(np.mean(m[..., 1:] & m[..., :-1]) - 0.81) < 0.002
  same = np.asarray(dropout.keep_mask(jax.random.PRNGKey(3), shape, 0.9))
  other = np.asarray(dropout.keep_mask(jax.random.PRNGKey(4), shape, 0.9))
  np.testing.assert_array_equal(m, same)
  # 2 * 0.9 * 0.1 = 0.18 for independent masks; std 3.1e-4, +-0.01 is 32 sigma
  assert 0.17 < np.mean(m != other) < 0.19


def test_mask_is_the_same_on_any_mesh():
  devices = np.array(jax.devices()[:8])
  assert devices.size == 8
  shape = (8, 4, 16, 16)
  key = jax.random.PRNGKey(7)
  single = np.asarray(jax.jit(lambda k: dropout.keep_mask(k, shape, 0.9))(key))
  for mesh_shape, spec in [((8,), P("a")), ((2, 4), P("a", "b")), ((4, 2), P(None, "a", "b"))]:
    names = ("a", "b")[:len(mesh_shape)]
    mesh = jax.sharding.Mesh(devices.reshape(mesh_shape), names)
    sharded = jax.jit(lambda k: dropout.keep_mask(k, shape, 0.9),
                      out_shardings=NamedSharding(mesh, spec))(key)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded), single)


def test_more_than_2_32_elements_get_distinct_counters():
  """A pod's global batch of attention probabilities exceeds 2^32 elements: the leading
  dimensions go into the high counter word (checked abstractly, and on a small shape
  that the split treats the same way)."""
  big = (16384, 16, 128, 128)  # 2^32 elements: LAMB 32k micro-batch on a v5e-256
  out = jax.eval_shape(lambda k: dropout.keep_mask(k, big, 0.9), jax.random.PRNGKey(0))
  assert out.shape == big and out.dtype == jnp.bool_
  # Same hash inputs as the single-word case when everything fits in the low word.
  shape = (4, 8, 16)
  key = jax.random.PRNGKey(1)
  k = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  bits, _ = dropout.threefry2x32(k[0], k[1], jnp.arange(512, dtype=jnp.uint32),
                                 jnp.zeros(512, jnp.uint32))
  expected = np.asarray(bits < np.uint32(round(0.9 * 2**32))).reshape(shape)
  np.testing.assert_array_equal(np.asarray(dropout.keep_mask(key, shape, 0.9)), expected)
  # With a 6-bit "word", shape (4, 8, 16) splits as high = [4, 8], low = [16]: every
  # element still gets its own (low, high) pair.
  low, high = dropout.counter_words(shape, word=64)
  assert int(np.max(low)) == 15 and int(np.max(high)) == 31
  pairs = set(zip(np.asarray(low).ravel().tolist(), np.asarray(high).ravel().tolist()))
  assert len(pairs) == 512


def test_module_scales_kept_values_and_is_identity_when_deterministic():
  x = jnp.ones((64, 256), jnp.float32) * 3.0
  module = dropout.Dropout(0.25)
  y = module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
  kept = np.asarray(y) != 0
  np.testing.assert_allclose(np.asarray(y)[kept], 4.0, rtol=EPS32)  # 3 / 0.75, rounded once
  assert abs(kept.mean() - 0.75) < 0.02  # 16,384 draws: std 0.0034, 0.02 is 6 sigma
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(dropout.Dropout(0.0).apply({}, x, deterministic=False), x)
  # Gradient flows only through kept elements, scaled like the values.
  g = jax.grad(lambda v: module.apply({}, v, deterministic=False,
                                      rngs={"dropout": jax.random.PRNGKey(0)}).sum())(x)
  # float32 1 / 0.75 vs float64: one rounding
  np.testing.assert_allclose(np.asarray(g), np.where(kept, 1 / 0.75, 0.0), rtol=EPS32)
