"""SQuAD v1.1 and v2.0 evaluation, numerically the official `evaluate-v1.1.py` / `-v2.0.py`.

Same answer normalisation (lower case, punctuation and articles a/an/the removed, white
space collapsed), exact match and token F1 maxed over the gold answers, v2.0 no-answer
handling (an unanswerable question's only gold answer is ""), the HasAns/NoAns breakdown,
`na_prob_thresh` and the official `find_best_thresh` search over null odds.

Where the official scripts crash or are silent we are explicit instead: a question with no
prediction scores 0 and is counted in `total` and in `missing` (v1.1's rule; the v2.0 script
raises KeyError); a missing null-odds entry is an error naming the question.

python -m bert_jax.tools.squad_eval --data_file=dev-v2.0.json --pred_file=predictions.json \
    [--na_prob_file=null_odds.json] [--na_prob_thresh=1.0] [--out_file=eval.json]
"""
from __future__ import annotations

import collections
import json
import re
import string
from typing import Any, Iterable, Mapping

from bert_jax import paths

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


class SquadEvalError(ValueError):
  """A dataset / predictions / null-odds file is unusable; the message says how to fix it."""


def normalize_answer(s: str) -> str:
  """Lower case, drop punctuation, drop articles, collapse white space (official)."""
  s = s.lower()
  s = "".join(ch for ch in s if ch not in _PUNCT)
  s = _ARTICLES.sub(" ", s)
  return " ".join(s.split())


def _tokens(s: str) -> list[str]:
  return normalize_answer(s).split() if s else []


def compute_exact(gold: str, pred: str) -> int:
  return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str, version: str = "2.0") -> float:
  """Token-overlap F1. v2.0: two empty answers agree (F1 1); v1.1: empty means 0."""
  gold_toks, pred_toks = _tokens(gold), _tokens(pred)
  if version == "2.0" and (not gold_toks or not pred_toks):
    return float(gold_toks == pred_toks)
  common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(pred_toks)
  recall = num_same / len(gold_toks)
  return 2 * precision * recall / (precision + recall)


def iter_questions(dataset: Iterable[Mapping[str, Any]]):
  """Yields every qa dict of the SQuAD `data` list, in file order."""
  for article in dataset:
    for paragraph in article.get("paragraphs", ()):
      yield from paragraph.get("qas", ())


def gold_answers(qa: Mapping[str, Any], version: str) -> list[str]:
  """v2.0: gold texts that normalise to something, else [""]; v1.1: all gold texts."""
  texts = [a["text"] for a in qa.get("answers", ())]
  if version == "1.1":
    return texts
  texts = [t for t in texts if normalize_answer(t)]
  return texts or [""]


def dataset_version(dataset_json: Mapping[str, Any]) -> str:
  """'1.1' or '2.0' from the file's version field (or is_impossible keys)."""
  v = str(dataset_json.get("version", "")).lstrip("v")
  if v.startswith("1"):
    return "1.1"
  if v.startswith("2"):
    return "2.0"
  has_impossible = any("is_impossible" in qa for qa in iter_questions(dataset_json["data"]))
  return "2.0" if has_impossible else "1.1"


def raw_scores(dataset, preds: Mapping[str, str], version: str = "2.0"):
  """Per-question exact and F1 of the given predictions (questions without one skipped)."""
  exact, f1 = {}, {}
  for qa in iter_questions(dataset):
    qid = qa["id"]
    if qid not in preds:
      continue
    golds = gold_answers(qa, version)
    pred = preds[qid]
    exact[qid] = max(compute_exact(g, pred) for g in golds)
    f1[qid] = max(compute_f1(g, pred, version) for g in golds)
  return exact, f1


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh: float):
  """Questions whose null odds exceed the threshold are predicted as no-answer."""
  out = {}
  for qid, s in scores.items():
    out[qid] = float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s
  return out


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans, total: int | None = None):
  """The official search: (best score in %, the null-odds threshold that gives it).

  Starts from "every question predicted null", then answers questions in increasing null
  odds; the threshold is the odds of the last question answered at the best score.
  `total` defaults to len(scores) (official); we pass the question count so missing
  predictions score 0.
  """
  num_no_ans = sum(1 for k in scores if not qid_to_has_ans[k])
  cur = best = num_no_ans
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if qid_to_has_ans[qid]:
      diff = scores[qid]
    else:
      diff = -1 if preds[qid] else 0
    cur += diff
    if cur > best:
      best = cur
      best_thresh = na_probs[qid]
  denom = total if total is not None else len(scores)
  return 100.0 * best / denom, best_thresh


def _summary(exact, f1, qids) -> dict:
  total = len(qids)
  return {"exact": 100.0 * sum(exact.get(k, 0) for k in qids) / total,
          "f1": 100.0 * sum(f1.get(k, 0) for k in qids) / total,
          "total": total}


def evaluate(dataset_json: Mapping[str, Any], preds: Mapping[str, str],
             na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0,
             version: str | None = None) -> dict[str, Any]:
  """All official metrics of one prediction set, in percent.

  v1.1: exact_match (= exact), f1, total. v2.0: exact, f1, total, HasAns_*, NoAns_* at
  `na_prob_thresh` and, when `na_probs` is given, best_exact(_thresh), best_f1(_thresh).
  Both: `missing` = questions without a prediction (scored 0).
  """
  if "data" not in dataset_json:
    raise SquadEvalError("SQuAD dataset JSON has no 'data' key: pass the official "
                         "train/dev file (top level {'version': ..., 'data': [...]}).")
  dataset = dataset_json["data"]
  version = version or dataset_version(dataset_json)
  qids = [qa["id"] for qa in iter_questions(dataset)]
  if not qids:
    raise SquadEvalError("the SQuAD dataset has no questions to evaluate.")
  missing = [q for q in qids if q not in preds]
  exact, f1 = raw_scores(dataset, preds, version)
  if version == "1.1":
    out = _summary(exact, f1, qids)
    out = {"exact_match": out["exact"], **out}
    out["missing"] = len(missing)
    return out

  qid_to_has_ans = {qa["id"]: bool(qa.get("answers")) for qa in iter_questions(dataset)}
  given_odds = na_probs is not None
  if na_probs is None:
    na_probs = {k: 0.0 for k in preds}
  lacking = [q for q in exact if q not in na_probs]
  if lacking:
    raise SquadEvalError(
        f"null odds missing for {len(lacking)} predicted question(s), e.g. {lacking[0]!r}: "
        "the --na_prob_file must hold a value for every id in the predictions file.")
  exact_t = apply_no_ans_threshold(exact, na_probs, qid_to_has_ans, na_prob_thresh)
  f1_t = apply_no_ans_threshold(f1, na_probs, qid_to_has_ans, na_prob_thresh)
  out = _summary(exact_t, f1_t, qids)
  for prefix, has in (("HasAns", True), ("NoAns", False)):
    subset = [q for q in qids if qid_to_has_ans[q] == has]
    if subset:
      out.update({f"{prefix}_{k}": v for k, v in _summary(exact_t, f1_t, subset).items()})
  if given_odds:
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(
        preds, exact, na_probs, qid_to_has_ans, total=len(qids))
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(
        preds, f1, na_probs, qid_to_has_ans, total=len(qids))
  out["missing"] = len(missing)
  return out


def load_json(path: str, what: str):
  try:
    return json.loads(paths.read_text(path))
  except FileNotFoundError:
    raise SquadEvalError(f"{what} file not found: {path}") from None
  except json.JSONDecodeError as e:
    raise SquadEvalError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno}); pass the {what} file as written.") from None
