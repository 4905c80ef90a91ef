"""Collapsed predictions are named: tasks/degenerate.describe on each kind, and each task's
`degenerate` (GLUE classification and STS-B, SWAG, SQuAD v2.0) on constructed outputs.
The end-to-end checks (results.json, summary line) ride on the fine-tuning runs of
test_glue.py, test_swag.py and test_squad_task.py."""
import numpy as np
import pytest

from bert_jax.data import squad as squad_data
from bert_jax.tasks import degenerate, glue, glue_metrics, squad
from bert_jax.tasks import squad_postprocess as pp
from bert_jax.tasks import swag

describe = degenerate.describe


def test_classification_all_one_class():
  labels = np.array([1] * 279 + [0] * 129)  # MRPC dev: 408 pairs, 279 paraphrases
  assert describe(np.ones(408, int), "dev", "class", labels, names=("0", "1")) == (
      "all 408 dev predictions are class 1 (the majority class, 68% of dev labels)")
  # the and the README's case: "1" everywhere scores F1 81.2 on MRPC dev
  assert round(100 * glue_metrics.f1(labels, np.ones(408, int)), 1) == 81.2
  assert describe(np.zeros(408, int), "dev", "class", labels) == (
      "all 408 dev predictions are class 0 (32% of dev labels)")
  nli = ("entailment", "neutral", "contradiction")
  assert describe([2, 2, 2], "dev_matched", "class", [0, 1, 2], names=nli) == (
      "all 3 dev_matched predictions are class contradiction (33% of dev_matched labels)")
  assert describe([1, 1], "test", "class") == "all 2 test predictions are class 1"


def test_classification_fine_or_undecidable():
  labels = np.array([0, 1, 1, 0])
  assert describe([0, 1, 1, 1], "dev", "class", labels) is None  # two classes predicted
  assert describe([1, 1, 1], "dev", "class", [1, 1, 1]) is None  # one-class gold: may be right
  assert describe([1], "dev", "class", [0]) is None  # a single prediction says nothing
  assert describe([], "dev", "class", []) is None
  with pytest.raises(ValueError, match="kind='binary'"):
    describe([1, 1], "dev", "binary")


def test_multiple_choice_all_one_ending():
  assert describe([0, 0, 0, 0], "dev", "choice", [0, 0, 1, 2]) == (
      "all 4 dev predictions are ending 0 (the most frequent gold ending, 50% of dev labels)")
  assert describe([3, 3, 3, 3], "dev", "choice", [0, 1, 2, 3]) == (
      "all 4 dev predictions are ending 3 (25% of dev labels)")  # a tie is no majority
  assert describe([3, 1, 3, 3], "dev", "choice", [0, 1, 2, 3]) is None


def test_regression_constant():
  gold = np.linspace(0.0, 5.0, 1500)  # STS-B's 0-5 scale
  flat = 2.7 + np.linspace(0, 0.004, 1500)  # moves less than 1e-3 of the gold spread
  assert describe(flat, "dev", "regression", gold) == (
      "all 1500 dev predictions are 2.702 (spread 0.004; dev labels span 0 to 5)")
  assert describe(2.7 + np.linspace(0, 0.006, 1500), "dev", "regression", gold) is None
  assert describe(np.full(3, 1.5), "test", "regression") == (
      "all 3 test predictions are 1.5 (constant)")
  assert describe([1.5, 1.5000001], "test", "regression") is None  # no gold: exact only


def test_no_answer_everywhere():
  gold = [True] * 11 + [False] * 10  # the v2.0 dev fixture: 11 of 21 unanswerable
  assert describe([True] * 21, "dev", "null", gold) == (
      "all 21 dev predictions are no-answer (52% of dev questions have none)")
  assert describe([True] * 20 + [False], "dev", "null", gold) is None
  assert describe([True] * 3, "dev", "null", [True] * 3) is None  # all unanswerable: right


def test_glue_task_degenerate_from_logits():
  mrpc = glue.GlueTask("mrpc", "unused")
  labels = np.array([1, 0, 1, 1])
  one_class = np.array([[0.1, 0.9]] * 4)
  assert mrpc.degenerate(one_class, None, {"labels": labels}, "dev", {}) == (
      "all 4 dev predictions are class 1 (the majority class, 75% of dev labels)")
  mixed = np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
  assert mrpc.degenerate(mixed, None, {"labels": labels}, "dev", {}) is None
  stsb = glue.GlueTask("stsb", "unused")
  gold = np.array([0.0, 2.5, 5.0])
  assert stsb.degenerate(np.full((3, 1), 3.0), None, {"labels": gold}, "dev", {}) == (
      "all 3 dev predictions are 3 (spread 0; dev labels span 0 to 5)")
  assert stsb.degenerate(np.array([[1.0], [3.0], [4.0]]), None, {"labels": gold}, "dev",
                         {}) is None


def test_swag_task_degenerate_ignores_unlabelled_rows():
  task = swag.MultipleChoiceTask(train_file="t", dev_file="d")
  scores = np.array([[0.0, 1.0, 0.0, 0.0]] * 3 + [[1.0, 0.0, 0.0, 0.0]])
  labels = np.array([1, 0, 2, -1])  # the row choosing ending 0 is unlabelled
  assert task.degenerate(scores, None, {"labels": labels}, "dev", {}) == (
      "all 3 dev predictions are ending 1 (33% of dev labels)")


def test_squad_v2_no_answer_at_tau_or_at_best_tau():
  ex = lambda q, answers: squad_data.SquadExample(q, "?", "c", ["c"], answers,
                                                  is_impossible=not answers)
  examples = [ex("a", ["x"]), ex("b", []), ex("c", ["y"])]
  pred = lambda odds: pp.Prediction("" if odds > 0 else "x", "x", odds, [])
  preds = {"a": pred(1.0), "b": pred(2.0), "c": pred(0.5)}
  assert squad.no_answer_degenerate(preds, examples, "dev", 0.0) == (
      "at τ=0, all 3 dev predictions are no-answer (33% of dev questions have none)")
  preds["c"] = pred(-1.0)  # answered at τ=0 ...
  assert squad.no_answer_degenerate(preds, examples, "dev", 0.0) is None
  # ... but best_f1 is read where nothing is answered (the official search's "" everywhere)
  assert squad.no_answer_degenerate(preds, examples, "dev", 0.0, best_tau=-2.0) == (
      "at the best-F1 τ=-2, all 3 dev predictions are no-answer (33% of dev questions "
      "have none)")
  del preds["a"]  # a skipped question is an explicit no-answer
  assert squad.no_answer_degenerate(preds, examples, "dev", -1.5) == (
      "at τ=-1.5, all 3 dev predictions are no-answer (33% of dev questions have none)")
