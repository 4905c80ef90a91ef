"""What the tests' numerical bounds rest on, and the seed of every randomised test.

Bounds are derived, not tuned (issue 16): (machine epsilon) x (roundings between the two
numbers compared) x (how much the computation amplifies them) x (the scale of what is
compared), each written beside its assertion. Where the computation amplifies rounding
without bound (Adam on near-zero gradients), the test compares float64 runs instead.
"""
import math
import os

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7: one float32 rounding, relative
EPS64 = float(np.finfo(np.float64).eps)  # 2.22e-16

# Equivalence runs (meshes, hosts, gradient accumulation) differ only in the order of
# float sums. Adam divides by sqrt(v) + eps_adam, so a rounding difference dg in a
# near-zero gradient entry moves its update by up to lr * dg / eps_adam, while a leaf's
# scale is >= lr (every entry with a real gradient moves ~lr per step). With
# dg <= K * eps * |g|, |g| <= max_grad_norm = 1 (clipped) and K = 1000 roundings (a
# reduction over ~500 tokens x ~50 ops deep, worst case, summed over a few steps), params
# and losses may differ by K * eps / eps_adam relative to the leaf's largest entry:
# float64: 1000 * 2.2e-16 / 1e-6 = 2.2e-7. float32: 1000 * 1.2e-7 / 1e-6 > 1, no bound
# at all, which is why these tests run in float64 (the float32 data8 run differed by
# 1.003e-5 with AVX2 code against a tuned 1e-5).
ADAM_EPS = 1e-6  # config.train.eps
EQUIV_RTOL = 1000 * EPS64 / ADAM_EPS


# Two float32 computations of the same value (ours vs PyTorch, two compilations, another
# padding or batch layout) differ by rounding. Each of the R roundings a value goes
# through in series adds an error of at most u = eps32 / 2 relative to the magnitudes
# involved; those errors are independent, so they add like a random walk (Higham & Mary,
# "A new approach to probabilistic rounding error analysis", SISC 2019): |a - b| <=
# LAMBDA * u * sqrt(computations * R) * scale, where LAMBDA = 6 leaves a chance below
# 1e-8 that independent errors exceed it.
LAMBDA = 6.0


def f32_tol(roundings: float, scale: float, computations: int = 2) -> float:
  """Allowed |a - b| for `computations` float32 evaluations (1 when the reference is
  float64 or exact) that each round `roundings` times in series, at magnitude `scale`
  (the largest |value| compared)."""
  return LAMBDA * (EPS32 / 2) * math.sqrt(computations * roundings) * float(scale)


def f64_tol(roundings: float, scale: float, computations: int = 2) -> float:
  """f32_tol for float64 computations."""
  return f32_tol(roundings, scale, computations) * EPS64 / EPS32


def sum_roundings(n: int) -> float:
  """A sum of n terms, as the CPU kernels of XLA and PyTorch compute it (blocked,
  pairwise): each result goes through about log2(n) additions in series."""
  return math.log2(max(n, 2))


def encoder_roundings(num_layers: int, hidden: int, intermediate: int, seq: int,
                      heads: int) -> float:
  """Roundings in series through a BERT encoder. Per layer: the reductions over hidden
  of the qkv, attention-output and intermediate matmuls and of the two LayerNorms' mean
  and variance (7), over the head dimension (scores), over the sequence (softmax sum,
  context), over intermediate (output matmul), plus ~10 elementwise ops (bias adds,
  scaling, exp, GELU, residual adds, rsqrt). +1 layer for the embeddings and a head."""
  per_layer = (7 * sum_roundings(hidden) + sum_roundings(intermediate)
               + 2 * sum_roundings(seq) + sum_roundings(hidden // heads) + 10)
  return (num_layers + 1) * per_layer


def mean_rtol(n: int) -> float:
  """Relative difference between two float64 computations of a mean (or percentage) of n
  terms summed in different orders: <= n - 1 additions, the division and the x100 each
  round once (worst case, not the random walk: these bounds are tiny anyway)."""
  return (n + 2) * EPS64


def max_relative_error(got, ref) -> float:
  """max |got - ref| / max |ref| of one array (a leaf's own scale)."""
  ref = np.asarray(ref)
  scale = float(np.max(np.abs(ref)))
  assert scale > 0, "a leaf of zeros: nothing to compare against"
  return float(np.max(np.abs(np.asarray(got) - ref))) / scale


# Randomised tests draw from random.Random(SEED): fixed by default so that CI repeats
# itself; BERT_JAX_TEST_SEED=<int> draws another case. Each such test prints the seed
# (pytest shows it with a failure) and puts it in its assertion messages.
SEED = int(os.environ.get("BERT_JAX_TEST_SEED", "0"))


def seed_note() -> str:
  return f"seed {SEED} (BERT_JAX_TEST_SEED={SEED} repeats this draw)"
