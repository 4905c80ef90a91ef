"""GLUE's official metrics in numpy (no scikit-learn/scipy at run time) and the GLUE score.

Each function equals its scikit-learn/scipy counterpart (tests/test_glue_metrics.py):
accuracy_score, f1_score (binary, positive class 1), matthews_corrcoef, pearsonr,
spearmanr. Degenerate inputs are defined, not nan, so picking the best epoch and
averaging into a GLUE score always works:
- Matthews correlation is 0.0 when labels or predictions are all one class (as sklearn);
- F1 is 0.0 when there are no positive labels and no positive predictions (as sklearn's
  default zero_division);
- Pearson and Spearman are 0.0 when either input is constant (scipy returns nan with a
  ConstantInputWarning; a constant prediction carries no linear/rank information, so we
  score it as "no correlation", the same convention sklearn uses for MCC).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def accuracy(labels, preds) -> float:
  labels, preds = np.asarray(labels), np.asarray(preds)
  return float(np.mean(labels == preds)) if labels.size else 0.0


def f1(labels, preds, positive: int = 1) -> float:
  """Binary F1 of class `positive` = 2tp / (2tp + fp + fn)."""
  labels, preds = np.asarray(labels) == positive, np.asarray(preds) == positive
  tp = np.sum(labels & preds)
  denom = 2 * tp + np.sum(~labels & preds) + np.sum(labels & ~preds)
  return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(labels, preds) -> float:
  """Matthews correlation (multi-class form, = sklearn's); 0.0 when undefined."""
  labels, preds = np.asarray(labels), np.asarray(preds)
  classes, inverse = np.unique(np.concatenate([labels, preds]), return_inverse=True)
  k, n = len(classes), len(labels)
  conf = np.zeros((k, k), np.float64)
  np.add.at(conf, (inverse[:n], inverse[n:]), 1.0)
  t_sum, p_sum = conf.sum(1), conf.sum(0)
  total, correct = conf.sum(), np.trace(conf)
  cov_tp = correct * total - t_sum @ p_sum
  cov_pp = total ** 2 - p_sum @ p_sum
  cov_tt = total ** 2 - t_sum @ t_sum
  if cov_pp * cov_tt == 0:
    return 0.0
  return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def pearson(x, y) -> float:
  """Pearson's r (float64, centred); 0.0 if either input is constant."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x @ x) * (y @ y))
  if denom == 0:
    return 0.0
  return float(np.clip((x @ y) / denom, -1.0, 1.0))


def rankdata(x) -> np.ndarray:
  """1-based ranks, ties get their average rank (scipy.stats.rankdata 'average')."""
  x = np.asarray(x)
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
  group = np.cumsum(starts) - 1
  first = np.flatnonzero(starts)
  counts = np.diff(np.r_[first, len(x)])
  avg = first + (counts + 1) / 2.0
  ranks = np.empty(len(x), np.float64)
  ranks[order] = avg[group]
  return ranks


def spearman(x, y) -> float:
  """Spearman's rho = Pearson of average ranks; 0.0 if either input is constant."""
  return pearson(rankdata(x), rankdata(y))


METRIC_FNS = {"accuracy": accuracy, "f1": f1, "matthews_corrcoef": matthews_corrcoef,
              "pearson": pearson, "spearman": spearman}


def compute(metric_names: Sequence[str], labels, preds) -> dict[str, float]:
  """{name: value} for the named metrics; accuracy is always added for classification."""
  out = {m: METRIC_FNS[m](labels, preds) for m in metric_names}
  if not {"pearson", "spearman"} & set(metric_names) and "accuracy" not in out:
    out["accuracy"] = accuracy(labels, preds)
  return out


def task_score(metrics: Mapping[str, float], names: Sequence[str]) -> float:
  """A task's GLUE score: the unweighted mean of its official metrics (GLUE paper)."""
  return float(np.mean([metrics[n] for n in names]))


def glue_score(task_scores: Mapping[str, float]) -> float:
  """The GLUE score over the tasks run: mean of task scores (MNLI = mean of m and mm)."""
  return float(np.mean(list(task_scores.values()))) if task_scores else float("nan")
