"""The SQuAD evaluator equals the official v1.1 / v2.0 definitions.

Expected values are computed here, independently of bert_jax.tasks.squad_eval, straight
from the definitions of the official scripts (normalisation, max over gold answers, v2.0
empty-answer rule, no-answer threshold, best-threshold search), on the real dev sets with
gold, perturbed, empty and incomplete prediction files; a self-contained sibling checks
hand-computed numbers on the fixture.
"""
import json
import pathlib
import random
import re
import string

import pytest

from bert_jax.tasks import squad_eval
from bert_jax.tools import squad_eval as squad_eval_cli
from _numerics import mean_rtol

FIX = pathlib.Path(__file__).parent / "fixtures" / "squad"


# ---- the definitions, restated independently --------------------------------------------

def ref_norm(s):
  s = s.lower().translate(str.maketrans("", "", string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def ref_f1(gold, pred, v2):
  g, p = ref_norm(gold).split(), ref_norm(pred).split()
  if v2 and (not g or not p):
    return 1.0 if g == p else 0.0
  common = 0
  pool = list(g)
  for tok in p:
    if tok in pool:
      pool.remove(tok)
      common += 1
  if not common:
    return 0.0
  prec, rec = common / len(p), common / len(g)
  return 2 * prec * rec / (prec + rec)


def ref_question_scores(qa, pred, v2):
  golds = [a["text"] for a in qa["answers"]]
  if v2:
    golds = [g for g in golds if ref_norm(g)] or [""]
  return (max(float(ref_norm(g) == ref_norm(pred)) for g in golds),
          max(ref_f1(g, pred, v2) for g in golds))


def questions(data):
  return [qa for art in data["data"] for par in art["paragraphs"] for qa in par["qas"]]


def ref_evaluate(data, preds, v2, na_probs=None, thresh=1.0):
  """Percent exact/F1 over all questions; missing predictions score 0."""
  ex = f1 = 0.0
  per = {}
  for qa in questions(data):
    if qa["id"] not in preds:
      per[qa["id"]] = (0.0, 0.0)
      continue
    e, f = ref_question_scores(qa, preds[qa["id"]], v2)
    if v2 and na_probs is not None and na_probs[qa["id"]] > thresh:
      e = f = float(not qa["answers"])
    per[qa["id"]] = (e, f)
  n = len(per)
  return 100 * sum(e for e, _ in per.values()) / n, 100 * sum(f for _, f in per.values()) / n, per


def pct(x, n: int):
  """pytest.approx for a float64 score (a mean, x100) over n questions, perhaps summed in
  another order: mean_rtol(n) (tests/_numerics.py)."""
  return pytest.approx(x, rel=mean_rtol(n), abs=0)


def ref_best(data, preds, na_probs, which):
  """Brute force over every threshold: score with null iff odds > t; the official picks
  the first (smallest) odds that reaches the max, 0.0 if predicting all-null is best."""
  qs = questions(data)
  raw = {qa["id"]: ref_question_scores(qa, preds[qa["id"]], True)[which] for qa in qs}
  def score(t):
    tot = 0.0
    for qa in qs:
      tot += float(not qa["answers"]) if na_probs[qa["id"]] > t else raw[qa["id"]]
    return 100 * tot / len(qs)
  best, best_t = score(float("-inf")), 0.0
  for t in sorted(na_probs.values()):
    s = score(t)
    if s > best + 1e-9:  # a tie up to summation order (100 x mean_rtol(1407) = 3e-11)
      best, best_t = s, t
  return best, best_t


# ---- data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev2(shared_data):
  return json.loads((shared_data / "squad/v2.0/dev.json").read_text())


@pytest.fixture(scope="module")
def dev1(shared_data):
  return json.loads((shared_data / "squad/v1.1/dev.json").read_text())


def gold_preds(data):
  return {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "") for qa in questions(data)}


def perturbed_preds(data, seed=0):
  """A mix of exact, near, partial, wrong, empty and spurious answers."""
  rng = random.Random(seed)
  qs = questions(data)
  others = [a["text"] for qa in qs for a in qa["answers"]] or ["nothing"]
  preds = {}
  for qa in qs:
    golds = [a["text"] for a in qa["answers"]]
    g = rng.choice(golds) if golds else rng.choice(qa.get("plausible_answers") or [
        {"text": "x"}])["text"]
    kind = rng.randrange(8)
    words = g.split()
    preds[qa["id"]] = [
        g,
        "The " + g.upper() + "!",                    # normalises to the same
        " ".join(words[1:]) if len(words) > 1 else g + " extra",  # partial
        g + " and more words here",                  # over-long
        rng.choice(others),                          # another question's answer
        "",                                          # empty
        " ".join(reversed(words)),                   # same bag of words
        g + " " + g,                                 # repeated tokens
    ][kind]
  return preds


# ---- unit definitions ------------------------------------------------------------------

def test_normalize_and_token_f1_hand_values():
  assert squad_eval.normalize_answer("The  Quick, brown (fox)!") == "quick brown fox"
  assert squad_eval.normalize_answer("an apple a day") == "apple day"
  assert squad_eval.normalize_answer("theater") == "theater"  # article only as a word
  # gold 4 tokens, pred 3, common 3: P=1, R=3/4, F1=6/7.
  assert squad_eval.compute_f1("Denmark, Iceland and Norway", "Denmark and Norway") == (
      pct(6 / 7, 4))  # 2PR / (P + R): a handful of roundings
  # repeated tokens count as a multiset: common("a b b", "b b b") = 2.
  assert squad_eval.compute_f1("x y y", "y y y") == pct(2 * (2 / 3) * (2 / 3) / (4 / 3), 4)
  assert squad_eval.compute_f1("", "") == 1.0            # v2.0: both no-answer
  assert squad_eval.compute_f1("", "", version="1.1") == 0.0
  assert squad_eval.compute_f1("the", "a", version="2.0") == 1.0  # both normalise to empty
  assert squad_eval.compute_exact("The Broncos.", "broncos") == 1


# ---- real dev sets ---------------------------------------------------------------------

def test_v2_gold_empty_and_counts(dev2):
  r = squad_eval.evaluate(dev2, gold_preds(dev2))
  assert (r["exact"], r["f1"], r["total"]) == (100.0, 100.0, 1407)
  assert (r["HasAns_total"], r["NoAns_total"], r["missing"]) == (705, 702, 0)
  r = squad_eval.evaluate(dev2, {qa["id"]: "" for qa in questions(dev2)})
  assert r["exact"] == pct(100 * 702 / 1407, 1407)
  assert r["f1"] == pct(100 * 702 / 1407, 1407)
  assert (r["HasAns_exact"], r["HasAns_f1"], r["NoAns_exact"]) == (0.0, 0.0, 100.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_v2_perturbed_matches_definition(dev2, seed):
  preds = perturbed_preds(dev2, seed)
  exp_e, exp_f, per = ref_evaluate(dev2, preds, v2=True)
  r = squad_eval.evaluate(dev2, preds)
  assert r["exact"] == pct(exp_e, 1407)
  assert r["f1"] == pct(exp_f, 1407)
  assert 20 < r["exact"] < 80 and r["f1"] > r["exact"]  # a real mix, not trivial
  has = [qa["id"] for qa in questions(dev2) if qa["answers"]]
  assert r["HasAns_f1"] == pct(100 * sum(per[q][1] for q in has) / len(has), len(has))


def test_v2_missing_ids_score_zero(dev2):
  preds = gold_preds(dev2)
  dropped = sorted(preds)[::14]  # ~100 questions, both kinds
  for q in dropped:
    del preds[q]
  exp_e, exp_f, _ = ref_evaluate(dev2, preds, v2=True)
  r = squad_eval.evaluate(dev2, preds)
  assert r["missing"] == len(dropped) and r["total"] == 1407
  assert r["exact"] == pct(exp_e, 1407) and r["f1"] == pct(exp_f, 1407)
  assert r["exact"] == pct(100 * (1407 - len(dropped)) / 1407, 1407)


def test_v2_null_odds_threshold_and_best_search(dev2):
  rng = random.Random(3)
  preds = perturbed_preds(dev2, 2)
  odds = {q: rng.gauss(0, 3) for q in preds}
  for thresh in (1.0, -0.5, 2.5):
    exp_e, exp_f, _ = ref_evaluate(dev2, preds, True, odds, thresh)
    r = squad_eval.evaluate(dev2, preds, odds, na_prob_thresh=thresh)
    assert r["exact"] == pct(exp_e, 1407) and r["f1"] == pct(exp_f, 1407)
  r = squad_eval.evaluate(dev2, preds, odds)
  for which, key in ((0, "exact"), (1, "f1")):
    best, best_t = ref_best(dev2, preds, odds, which)
    assert r[f"best_{key}"] == pct(best, 1407)
    assert r[f"best_{key}_thresh"] == best_t  # one of the given odds (or 0.0): that float
    # Applying the found threshold gives the best score.
    at = squad_eval.evaluate(dev2, preds, odds, na_prob_thresh=best_t)
    assert at[key] == pct(best, 1407)


def test_v1_gold_perturbed_missing(dev1):
  r = squad_eval.evaluate(dev1, gold_preds(dev1))
  assert (r["exact_match"], r["f1"], r["total"]) == (100.0, 100.0, 810)
  assert "HasAns_exact" not in r and "best_f1" not in r
  r = squad_eval.evaluate(dev1, {qa["id"]: "" for qa in questions(dev1)})
  assert (r["exact_match"], r["f1"]) == (0.0, 0.0)  # v1.1: empty never matches
  preds = perturbed_preds(dev1, 5)
  for q in sorted(preds)[::9]:
    del preds[q]
  exp_e, exp_f, _ = ref_evaluate(dev1, preds, v2=False)
  r = squad_eval.evaluate(dev1, preds)
  assert r["exact_match"] == pct(exp_e, 810) and r["f1"] == pct(exp_f, 810)
  assert r["missing"] == len(range(0, 810, 9)) and r["total"] == 810


# ---- self-contained: fixture + hand-computed numbers, CLI, bad files --------------------

def test_fixture_hand_computed_v2():
  data = json.loads((FIX / "dev-v2.0-sample.json").read_text())
  qs = questions(data)
  assert len(qs) == 21 and sum(bool(q["answers"]) for q in qs) == 10
  preds = gold_preds(data)
  preds["56ddde6b9a695914005b962a"] = "Denmark and Norway"       # F1 6/7, EM 0
  preds["56ddde6b9a695914005b9629"] = "the 10th and 11th centuries"  # EM 1 (2nd gold)
  preds["56ddde6b9a695914005b962b"] = ""                         # answerable -> 0
  preds["5ad39d53604f3c001a3fe8d1"] = "Normans"                  # unanswerable -> 0
  del preds["5ad39d53604f3c001a3fe8d2"]                          # missing -> 0
  r = squad_eval.evaluate(data, preds)
  assert r["exact"] == pct(100 * 17 / 21, 21)
  assert r["f1"] == pct(100 * (17 + 6 / 7) / 21, 21 + 4)  # + the 6/7's roundings
  assert r["HasAns_f1"] == pct(100 * (8 + 6 / 7) / 10, 10 + 4)
  assert r["NoAns_exact"] == pct(100 * 9 / 11, 11)
  assert r["missing"] == 1


def test_cli_and_bad_files(tmp_path, capsys):
  data = FIX / "dev-v2.0-sample.json"
  preds = gold_preds(json.loads(data.read_text()))
  (tmp_path / "p.json").write_text(json.dumps(preds))
  (tmp_path / "odds.json").write_text(json.dumps({q: -1.0 for q in preds}))
  r = squad_eval_cli.main([f"--data_file={data}", f"--pred_file={tmp_path / 'p.json'}",
                       f"--na_prob_file={tmp_path / 'odds.json'}",
                       f"--out_file={tmp_path / 'eval.json'}"])
  assert json.loads(capsys.readouterr().out)["f1"] == 100.0 == r["f1"]
  assert json.loads((tmp_path / "eval.json").read_text())["best_f1"] == 100.0
  (tmp_path / "bad.json").write_text('{"a": "x",\n "b": }')
  with pytest.raises(squad_eval.SquadEvalError, match=r"bad.json: not valid JSON .* line 2"):
    squad_eval_cli.main([f"--data_file={data}", f"--pred_file={tmp_path / 'bad.json'}"])
  (tmp_path / "odds_short.json").write_text(json.dumps({}))
  with pytest.raises(squad_eval.SquadEvalError, match="null odds missing for 21"):
    squad_eval_cli.main([f"--data_file={data}", f"--pred_file={tmp_path / 'p.json'}",
                     f"--na_prob_file={tmp_path / 'odds_short.json'}"])
  with pytest.raises(squad_eval.SquadEvalError, match="no 'data' key"):
    squad_eval.evaluate({"version": "v2.0"}, preds)
