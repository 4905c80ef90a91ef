"""SQuAD postprocessing: gold-span logits reproduce the gold answers on the real dev sets,
the τ search picks the F1-maximising threshold and applying it gives that F1, n-best
rules (max-context, max_answer_length, n_best_size), no crash without candidates, and
prediction files that survive a crash mid-run.
"""
import json
import os
import pathlib

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import squad as sq
from bert_jax.tasks import squad_eval
from bert_jax.tasks import squad_postprocess as pp
from _numerics import EPS64, mean_rtol

FIX = pathlib.Path(__file__).parent / "fixtures" / "squad"


@pytest.fixture(scope="module")
def tok(minilm_path):
  return tokenization.load_tokenizer(f"{minilm_path}/vocab.txt", do_lower_case=True)


def gold_logits(examples, feats, seed=0, boost=20.0):
  """Noise, plus `boost` at the gold start/end of every window holding the answer and at
  [CLS] of every window of an unanswerable question."""
  n, s = feats["input_ids"].shape
  rng = np.random.default_rng(seed)
  start, end = rng.normal(size=(n, s)), rng.normal(size=(n, s))
  rows = np.arange(n)
  inside = feats["start_positions"] > 0
  start[rows[inside], feats["start_positions"][inside]] += boost
  end[rows[inside], feats["end_positions"][inside]] += boost
  impossible = np.array([examples[i].is_impossible for i in feats["example_index"]])
  start[impossible, 0] += boost
  end[impossible, 0] += boost
  return start, end


def test_get_final_text_projection():
  # the original's docstring example: predicted "steve smith" inside "Steve Smith's"
  assert pp.get_final_text("steve smith", "Steve Smith's", True) == "Steve Smith"
  assert pp.get_final_text("beyonce", "Beyoncé's", True) == "Beyoncé"  # accents kept
  assert pp.get_final_text("1990", "(1990s),", True) == "1990"
  assert pp.get_final_text("xyz", "Steve", True) == "Steve"  # not found: whole words
  assert pp.get_final_text("Denver", "Denver's", False) == "Denver"  # cased model
  assert pp.detokenize(["gold", "##en", "anniversary"]) == "golden anniversary"


@pytest.fixture(scope="module")
def dev2(shared_data, tok):
  """Real v2.0 dev read as training data (targets = first gold answer), windows 384/128."""
  data = json.loads((shared_data / "squad/v2.0/dev.json").read_text())
  examples, _ = sq.read_squad(data, is_training=True)
  feats, _ = sq.featurize(examples, tok, 384, 128, 64, is_training=True)
  return data, examples, feats


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (128, 32)])
def test_gold_span_logits_reproduce_gold_answers_v2(dev2, tok, max_seq_length, doc_stride):
  data, examples, feats = dev2
  if max_seq_length != 384:  # many windows per question: max-context matters
    feats, _ = sq.featurize(examples, tok, max_seq_length, doc_stride, 64, is_training=True)
  start, end = gold_logits(examples, feats)
  preds = pp.postprocess(examples, feats, start, end, tok, version_2=True)
  r = pp.evaluate(data, preds, version_2=True, tau=0.0)
  print(f"\ngold-span logits {max_seq_length}/{doc_stride}: {r}")
  assert r["total"] == 1407 and r["missing"] == 0
  # Exactly 100, as the README says: numpy logits with a 20-sigma boost, no float margin.
  assert r["exact"] == r["f1"] == r["HasAns_exact"] == r["HasAns_f1"] == 100.0
  assert r["NoAns_exact"] == 100.0
  first = {e.qas_id: e.answer_text for e in examples if not e.is_impossible}
  differ = [(a, preds[q].text) for q, a in first.items() if preds[q].text != a]
  # The very text of the first answer, but once: "gold rush" cuts the word "gold rushes",
  # which word-aligned tokens give whole (another gold answer of that question).
  assert differ == [("gold rush", "gold rushes")]


def test_gold_span_logits_v1(shared_data, tok):
  data = json.loads((shared_data / "squad/v1.1/dev.json").read_text())
  examples, _ = sq.read_squad(data, is_training=True)
  feats, _ = sq.featurize(examples, tok, 384, 128, 64, is_training=True)
  start, end = gold_logits(examples, feats)
  preds = pp.postprocess(examples, feats, start, end, tok, version_2=False)
  r = pp.evaluate(data, preds, version_2=False)
  # 16 of the 810 first gold answers cut a white-space word ("8" of "20–18", "ten" of
  # "contenders"): word-aligned tokens give the whole word; every miss is one of those.
  assert r["total"] == 810 and r["exact_match"] == pytest.approx(  # 98.02
      100 * 794 / 810, rel=mean_rtol(810), abs=0)
  misses = [(e.answer_text, preds[e.qas_id].text) for e in examples
            if not max(squad_eval.compute_exact(g, preds[e.qas_id].text) for g in e.answers)]
  assert len(misses) == 16
  assert all(a.lower() in p.lower() and a != p for a, p in misses)


def test_tau_search_picks_best_f1_and_applying_it_reproduces_it(dev2, tok):
  data, examples, feats = dev2
  # A biased model: answers found (score ~12), but every null score shifted by ~14, so
  # answerable questions get null odds ~+2 (τ=0 predicts "") and the best τ is positive.
  start, end = gold_logits(examples, feats, seed=1, boost=6.0)
  rng = np.random.default_rng(2)
  start[:, 0] += 14.0 + rng.normal(0, 5.0, len(start))
  preds = pp.postprocess(examples, feats, start, end, tok, version_2=True)
  r = pp.evaluate(data, preds, version_2=True, tau=0.0)
  tau = r["best_f1_thresh"]
  print(f"\nτ=0: F1 {r['f1']:.2f}; best τ={tau:.3f}: F1 {r['best_f1']:.2f}")
  assert tau > 0 and r["best_f1"] > r["f1"] + 1.0
  assert (round(r["f1"], 1), round(r["best_f1"], 1)) == (67.6, 97.0)  # the README's figures
  # brute force over every threshold (vectorised): nothing beats the search
  qs = [qa for art in data["data"] for par in art["paragraphs"] for qa in par["qas"]]
  has = np.array([bool(qa["answers"]) for qa in qs])
  odds = np.array([preds[qa["id"]].null_odds for qa in qs])
  f1 = np.array([max(squad_eval.compute_f1(g, preds[qa["id"]].best_non_null)
                     for g in squad_eval.gold_answers(qa, "2.0")) for qa in qs])
  grid = np.concatenate([[-np.inf], np.sort(odds)])
  scores = [100 * np.mean(np.where(odds > t, ~has, f1)) for t in grid]
  # float64 percentages over len(qs) questions, summed in other orders: mean_rtol
  assert max(scores) == pytest.approx(r["best_f1"], rel=mean_rtol(len(qs)), abs=0)
  assert r["best_f1"] < 99.0  # not trivially separable
  # re-postprocessing with τ* (no re-run of the model) gives exactly best_f1 / at-τ EM
  again = pp.postprocess(examples, feats, start, end, tok, version_2=True,
                         null_score_diff_threshold=tau)
  r2 = squad_eval.evaluate(data, {q: p.text for q, p in again.items()})
  assert r2["f1"] == pytest.approx(r["best_f1"], rel=mean_rtol(len(qs)), abs=0)
  assert pp.evaluate(data, again, True, tau)["f1"] == pytest.approx(
      r["best_f1"], rel=mean_rtol(len(qs)), abs=0)


def test_nbest_rules_max_context_and_lengths(tok):
  examples, _ = sq.read_squad(str(FIX / "dev-v2.0-sample.json"), is_training=False)
  feats, _ = sq.featurize(examples, tok, 64, 16, 24)
  n, s = feats["input_ids"].shape
  rng = np.random.default_rng(0)
  start, end = rng.normal(size=(n, s)), rng.normal(size=(n, s))
  preds = pp.postprocess(examples, feats, start, end, tok, version_2=True, n_best_size=5,
                         max_answer_length=1)
  for p in preds.values():
    assert 1 <= len(p.nbest) <= 6  # n_best_size + the null entry
    # float64 softmax: each probability rounds once, their sum len(nbest) times
    assert sum(e["probability"] for e in p.nbest) == pytest.approx(
        1.0, rel=0, abs=2 * len(p.nbest) * EPS64)
    texts = [e["text"] for e in p.nbest]
    assert len(set(texts)) == len(texts) and "" in texts
    assert all(" " not in t for t in texts)  # one token -> never two words
  # max-context: a huge span in a window where its token is NOT max-context is ignored
  ei, rows = next((ei, rows) for ei, rows in pp.example_rows(feats["example_index"])
                  if len(rows) >= 3)
  a, b = rows[0], rows[1]
  overlap = [p for p in range(s) if feats["token_to_orig"][a, p] >= 0 and
             not feats["token_is_max_context"][a, p] and
             tok.convert_ids_to_tokens([feats["input_ids"][a, p]])[0].isalpha()]
  p = overlap[0]  # in window a, but its max-context window is another one
  z = np.zeros((n, s))
  st, en = z.copy(), z.copy()
  st[a, p] = en[a, p] = 10.0
  word = examples[ei].doc_tokens[feats["token_to_orig"][a, p]]
  got = pp.predict_question(examples[ei], rows, feats, st, en, tok).best_non_null
  assert got.lower() != word.lower().strip(".,")
  # the same span where it is max-context wins
  q = int(np.flatnonzero((feats["token_to_orig"][b] == feats["token_to_orig"][a, p]) &
                         feats["token_is_max_context"][b])[0])
  st, en = z.copy(), z.copy()
  st[b, q] = en[b, q] = 10.0
  got = pp.predict_question(examples[ei], rows, feats, st, en, tok)
  assert got.text and got.text.lower() in word.lower()


def test_no_valid_candidate_never_crashes(tok):
  examples, _ = sq.read_squad(str(FIX / "dev-v2.0-sample.json"), is_training=False)
  feats, _ = sq.featurize(examples, tok, 384, 128, 64)
  n, s = feats["input_ids"].shape
  # every top index points at question tokens / padding: no valid non-null span
  start = np.where(feats["token_to_orig"] >= 0, -100.0, 5.0)
  start[:, 0] = 1.0
  for v2 in (True, False):
    preds = pp.postprocess(examples, feats, start, start.copy(), tok, version_2=v2,
                           n_best_size=3)
    assert len(preds) == 21 and all(p.text == "" for p in preds.values())
  assert all(p.null_odds == pp.NO_ANSWER_ODDS for p in pp.postprocess(
      examples, feats, start, start.copy(), tok, version_2=True, n_best_size=3).values())


def test_prediction_files_survive_a_crash(tmp_path):
  mk = lambda i: pp.Prediction(f"a{i}", f"a{i}", -1.0 * i,
                               [{"text": f"a{i}", "probability": 1.0, "start_logit": 1.0,
                                 "end_logit": 2.0}])
  w = pp.PredictionWriter(str(tmp_path), version_2=True, resume_key="model-a")
  for i in range(5):
    w.add(f"q{i}", mk(i))
  w.flush()
  with open(tmp_path / pp.PARTIAL_FILE, "a") as f:  # a crash in the middle of a line
    f.write('{"id": "q5", "te')
  del w
  w = pp.PredictionWriter(str(tmp_path), version_2=True, resume_key="model-a")  # rerun
  assert w.done == {f"q{i}" for i in range(5)}
  for i in range(5, 8):
    w.add(f"q{i}", mk(i))
  paths = w.finalize([f"q{i}" for i in range(8)], tau=-2.5)
  w.close()
  preds = json.loads(pathlib.Path(paths["predictions"]).read_text())
  assert list(preds) == [f"q{i}" for i in range(8)]
  assert preds["q2"] == "" and preds["q3"] == "a3"  # odds -2 > τ=-2.5 -> null
  assert json.loads(pathlib.Path(paths["null_odds"]).read_text())["q7"] == -7.0
  assert len(json.loads(pathlib.Path(paths["nbest_predictions"]).read_text())) == 8
  assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]
  # another model (key) in the same directory never reuses these predictions
  assert not pp.PredictionWriter(str(tmp_path), True, resume_key="model-b").done


def test_best_tau_when_answering_nothing_is_best():
  """The official search reports τ=0.0 when predicting "" everywhere is best, which may
  not reproduce that score; our τ does."""
  data = json.loads((FIX / "dev-v2.0-sample.json").read_text())
  qids = [qa["id"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
  # every non-null answer is wrong, null odds all negative: τ=0 answers everything
  preds = {q: pp.Prediction("zzz", "zzz", -1.0 - i, []) for i, q in enumerate(qids)}
  r = pp.evaluate(data, preds, version_2=True, tau=0.0)
  assert r["f1"] == 0.0 and r["best_f1"] == pytest.approx(100 * 11 / 21, rel=mean_rtol(21),
                                                          abs=0)
  assert r["best_f1_thresh"] < min(p.null_odds for p in preds.values())
  at = squad_eval.evaluate(data, pp.with_threshold(preds, r["best_f1_thresh"]))
  assert at["f1"] == pytest.approx(r["best_f1"], rel=mean_rtol(21), abs=0)
