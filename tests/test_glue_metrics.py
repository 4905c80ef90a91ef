"""GLUE metrics equal scikit-learn / scipy on random and degenerate inputs; GLUE score."""
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from bert_jax.tasks import glue_metrics as gm
from _numerics import EPS64

# Accuracy, MCC and F1 come from integer counts (exact in float64) through about 10
# float64 operations (products, sqrt, division) in ours and in scikit-learn: 2 x 10
# roundings of a value <= 1.
COUNT_METRIC_ABS = 20 * EPS64


def correlation_abs(n: int) -> float:
  """Pearson's r in float64 two ways (ours, scipy): the centring and the three sums of
  n products round <= n + 8 times in series; each error is relative to sqrt(sum dx^2
  sum dy^2) (Cauchy-Schwarz), the denominator: so |r error| <= 2 (n + 8) eps64."""
  return 2 * (n + 8) * EPS64


def _random_cases():
  rng = np.random.default_rng(0)
  for n in (1, 2, 7, 100, 1000):
    for k in (2, 3):
      yield rng.integers(0, k, n), rng.integers(0, k, n)


@pytest.mark.parametrize("labels,preds", list(_random_cases()))
def test_classification_metrics_equal_sklearn_on_random_inputs(labels, preds):
  assert gm.accuracy(labels, preds) == pytest.approx(skm.accuracy_score(labels, preds),
                                                    rel=0, abs=COUNT_METRIC_ABS)
  assert gm.matthews_corrcoef(labels, preds) == pytest.approx(
      skm.matthews_corrcoef(labels, preds), rel=0, abs=COUNT_METRIC_ABS)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sk_f1 = skm.f1_score(labels == 1, preds == 1)  # binary F1 of class 1, as GLUE.
  assert gm.f1(labels, preds) == pytest.approx(sk_f1, rel=0, abs=COUNT_METRIC_ABS)


EDGE = {
    "all one class, right": ([1, 1, 1, 1], [1, 1, 1, 1]),
    "all one class, wrong": ([1, 1, 1, 1], [0, 0, 0, 0]),
    "constant predictions": ([0, 1, 0, 1, 1], [1, 1, 1, 1, 1]),
    "all negative": ([0, 0, 0], [0, 0, 0]),
    "perfect": ([0, 1, 1, 0], [0, 1, 1, 0]),
    "inverted": ([0, 1, 1, 0], [1, 0, 0, 1]),
    "single example": ([1], [0]),
}


@pytest.mark.parametrize("name", list(EDGE))
def test_classification_metrics_equal_sklearn_on_edge_inputs(name):
  labels, preds = map(np.asarray, EDGE[name])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # sklearn warns on the ill-defined cases; values agree.
    expected = (skm.accuracy_score(labels, preds), skm.matthews_corrcoef(labels, preds),
                skm.f1_score(labels, preds, pos_label=1, labels=[0, 1], zero_division=0))
  got = (gm.accuracy(labels, preds), gm.matthews_corrcoef(labels, preds), gm.f1(labels, preds))
  assert got == pytest.approx(expected, rel=0, abs=COUNT_METRIC_ABS)


def test_mcc_is_zero_when_undefined():
  assert gm.matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
  assert gm.matthews_corrcoef([0, 1, 0], [0, 0, 0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_pearson_spearman_equal_scipy_on_random_inputs(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=50 + seed)
  y = 0.5 * x + rng.normal(size=x.shape)
  tol = correlation_abs(len(x))  # Spearman: Pearson of the (exact) ranks
  assert gm.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], rel=0, abs=tol)
  assert gm.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], rel=0, abs=tol)


def test_spearman_with_ties_equals_scipy():
  rng = np.random.default_rng(3)
  x = rng.integers(0, 6, 200).astype(float)  # STS-B gold scores have many ties.
  y = np.round(x + rng.normal(size=200), 1)
  assert gm.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], rel=0,
                                            abs=correlation_abs(len(x)))
  np.testing.assert_array_equal(gm.rankdata(x), scipy.stats.rankdata(x))  # halves: exact


def test_constant_input_correlation_is_defined_as_zero_where_scipy_gives_nan():
  gold = np.array([0.0, 1.5, 3.0, 4.2, 5.0])
  const = np.full(5, 2.5)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert np.isnan(scipy.stats.pearsonr(gold, const)[0])
    assert np.isnan(scipy.stats.spearmanr(gold, const)[0])
  assert gm.pearson(gold, const) == 0.0
  assert gm.spearman(gold, const) == 0.0
  assert gm.pearson(const, gold) == 0.0
  assert gm.pearson(gold, 2 * gold + 1) == pytest.approx(1.0, rel=0, abs=correlation_abs(5))
  assert gm.spearman(gold, -gold) == pytest.approx(-1.0, rel=0, abs=correlation_abs(5))


def test_compute_task_and_glue_score():
  labels, preds = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
  m = gm.compute(("f1", "accuracy"), labels, preds)
  assert m == pytest.approx({"f1": 0.8, "accuracy": 0.75}, rel=0, abs=COUNT_METRIC_ABS)
  # (f1 + accuracy) / 2: two more roundings
  assert gm.task_score(m, ("f1", "accuracy")) == pytest.approx(0.775, rel=0,
                                                               abs=COUNT_METRIC_ABS)
  assert set(gm.compute(("matthews_corrcoef",), labels, preds)) == {"matthews_corrcoef",
                                                                    "accuracy"}
  assert set(gm.compute(("pearson", "spearman"), labels, preds)) == {"pearson", "spearman"}
  assert gm.glue_score({"mrpc": 80.0, "rte": 60.0}) == 70.0  # (80 + 60) / 2: exact
