"""Pieces of the learning studies: a SQuAD v2.0 train slice brought to the official share
of unanswerable questions (bert_jax.data.squad.add_unanswerable, used by
benchmarks/squad_finetune.py) and the summary over seeds (benchmarks/seeds.py)."""
import json
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import seeds  # noqa: E402

from bert_jax.data import squad  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "squad" / "train-v2.0-sample.json"
SHARED = REPO.parent / "shared" / "data" / "squad" / "v2.0" / "train.json"


def _questions(dataset):
  return [(a, p, qa) for a, art in enumerate(dataset["data"])
          for p, par in enumerate(art["paragraphs"]) for qa in par["qas"]]


def _check_rebalanced(original: dict, share: float):
  before = json.dumps(original, sort_keys=True)
  out, added = squad.add_unanswerable(original, share, seed=3)
  assert json.dumps(original, sort_keys=True) == before  # the input is left alone
  qs = _questions(out)
  unans = sum(bool(qa.get("is_impossible")) for _, _, qa in qs)
  assert added == len(qs) - len(_questions(original)) > 0
  # The smallest number of added questions that reaches the share.
  assert unans / len(qs) >= share > (unans - 1) / (len(qs) - 1)
  ids = [qa["id"] for _, _, qa in qs]
  assert len(ids) == len(set(ids))
  source = {qa["id"]: (a, p, qa) for a, p, qa in _questions(original)}
  for a, p, qa in qs:
    if not qa["id"].endswith("_neg"):
      continue
    sa, sp, src = source[qa["id"][:-4]]
    # Same article, another paragraph, none of the answers in it, no answer given.
    assert (a, qa["question"]) == (sa, src["question"]) and p != sp
    context = out["data"][a]["paragraphs"][p]["context"].lower()
    assert not any(g["text"].lower() in context for g in src["answers"])
    assert qa["is_impossible"] and qa["answers"] == []
  # Deterministic in the seed; the reader takes every added question as unanswerable.
  assert squad.add_unanswerable(original, share, seed=3)[0] == out
  examples, _ = squad.read_squad(out, is_training=True, version="2.0")
  negs = [e for e in examples if e.qas_id.endswith("_neg")]
  assert len(negs) == added and all(e.is_impossible for e in negs)
  return out, added


def test_add_unanswerable_on_the_fixture():
  data = json.loads(FIXTURE.read_text())  # 39 questions; only article 1 has 2 paragraphs
  _check_rebalanced(data, 0.4)
  with pytest.raises(ValueError, match="could add only 25 of 29 .* smaller share"):
    squad.add_unanswerable(data, 0.5)
  with pytest.raises(ValueError, match="unanswerable_share=1.5"):
    squad.add_unanswerable(data, 1.5)


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data (fixture test above)")
def test_add_unanswerable_reaches_the_official_share_on_the_train_slice():
  # 4,719 questions, 348 unanswerable (7.4%) -> the official train file's 33.4%.
  _, added = _check_rebalanced(json.loads(SHARED.read_text()), 0.334)
  assert added == 1845


def test_commonsense_qa_summary_pairs_seeds():
  ours, hf = "bert_jax (JAX/Flax)", "Hugging Face PyTorch BertForMultipleChoice"
  runs = [{"impl": ours, "seed": s, "dev_accuracy_per_epoch": [0.2, f],
           "best_dev_accuracy": max(0.2, f), "train_seconds": 1.0}
          for s, f in ((0, 0.30), (1, 0.34), (2, 0.26))]
  runs += [{"impl": hf, "seed": s, "dev_accuracy_per_epoch": [0.25, f],
            "best_dev_accuracy": max(0.25, f), "train_seconds": 2.0}
           for s, f in ((2, 0.28), (0, 0.29), (1, 0.30))]
  s = seeds.summarize(runs, 221)
  assert s[ours]["final"] == [0.30, 0.34, 0.26]
  assert s[ours]["final_mean"] == pytest.approx(0.30)
  assert s[ours]["final_se_over_seeds"] == pytest.approx(np.std([.30, .34, .26], ddof=1) / 3**.5)
  assert s[ours]["one_run_binomial_se"] == pytest.approx((0.3 * 0.7 / 221) ** 0.5)
  d = s["difference_final"]
  assert d["seeds"] == [0, 1, 2]
  assert d["per_seed"] == pytest.approx([0.01, 0.04, -0.02])
  assert d["mean"] == pytest.approx(0.01)
