"""SQuAD postprocessing: window logits -> answer text, n-best, null odds; τ; prediction files.

As the original `run_squad.py` `write_predictions`: for each question, over all its
windows, the `n_best_size` best start and end indices form candidates that must lie in
the context, end >= start, span <= `max_answer_length` tokens, and start at a token whose
max-context window is this one; the top `n_best_size` distinct texts form the n-best.
Text is projected back onto the original words (`get_final_text`: original spacing and
casing, trimmed to the predicted sub-tokens). v2.0: s_null = min over windows of
start[CLS] + end[CLS]; null odds = s_null - best non-null score; predict "" iff
odds > τ (`null_score_diff_threshold`).

Unlike the original, a question whose candidates are all invalid or null predicts ""
(with null odds NO_ANSWER_ODDS) instead of crashing. `PredictionWriter` appends each
finished question to a JSON-lines file as it goes, so a crash loses nothing already
predicted (a rerun resumes), and writes the final files atomically.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from bert_jax import paths
from bert_jax.tasks import squad_eval

# Null odds of a question with no valid non-null candidate: it is "" at any sane τ.
NO_ANSWER_ODDS = 1e6
PARTIAL_FILE = "predictions.partial.jsonl"


@dataclasses.dataclass
class Prediction:
  """One question's answer at the chosen τ, its best non-null text and n-best list."""
  text: str
  best_non_null: str
  null_odds: float
  nbest: list[dict[str, Any]]


@functools.lru_cache(maxsize=4)
def _basic_tokenizer(do_lower_case: bool):
  """BERT's BasicTokenizer (clean, CJK split, lower + strip accents, punctuation split)."""
  from tokenizers import normalizers, pre_tokenizers
  norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                    strip_accents=do_lower_case, lowercase=do_lower_case)
  pre = pre_tokenizers.BertPreTokenizer()
  return lambda text: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool) -> str:
  """The span of `orig_text` (original words) that the normalised `pred_text` covers.

  The original algorithm: basic-tokenize orig_text, find pred_text in it, and map the
  character positions back through the space-free alignment of both; on any mismatch
  fall back to orig_text.
  """
  tok_text = " ".join(_basic_tokenizer(do_lower_case)(orig_text))
  start = tok_text.find(pred_text)
  if start == -1 or not pred_text:
    return orig_text
  end = start + len(pred_text) - 1
  # Index of every non-space character of orig_text: the i-th non-space character of
  # tok_text aligns with the i-th of orig_text when both have as many.
  orig_chars = [i for i, c in enumerate(orig_text) if c != " "]
  if len(orig_chars) != len(tok_text) - tok_text.count(" "):
    return orig_text
  if tok_text[start] == " " or tok_text[end] == " ":
    return orig_text
  ns_start = start - tok_text.count(" ", 0, start)
  ns_end = end - tok_text.count(" ", 0, end)
  return orig_text[orig_chars[ns_start]:orig_chars[ns_end] + 1]


def detokenize(tokens: Sequence[str]) -> str:
  """WordPiece pieces -> text (" ##" joins; SentencePiece "▁" starts a word)."""
  text = " ".join(tokens).replace(" ##", "").replace("##", "")
  if any(t.startswith("\u2581") for t in tokens):
    text = "".join(tokens).replace("\u2581", " ")
  return " ".join(text.split())


def _masked(logits: np.ndarray, features, row: int) -> np.ndarray:
  """Logits of one window over its full length, padding positions at -inf.

  Logits may come cut to a length bucket (or 0-padded past it); padding positions are
  never answers, and masking them makes the n-best independent of the bucketing.
  """
  mask = np.asarray(features["attention_mask"][row]) > 0
  out = np.full(mask.shape, -np.inf, np.float32)
  n = min(len(logits), len(mask))
  out[:n] = np.where(mask[:n], logits[:n], -np.inf)
  return out


def _best_indexes(logits: np.ndarray, n: int) -> np.ndarray:
  # Stable descending order: ties keep position order, as the original's sorted().
  return np.argsort(-logits, kind="stable")[:n]


def _softmax(scores: Sequence[float]) -> list[float]:
  if not scores:
    return []
  m = max(scores)
  e = [math.exp(s - m) for s in scores]
  total = sum(e)
  return [x / total for x in e]


def predict_question(example, rows: Sequence[int], features: Mapping[str, np.ndarray],
                     start_logits: np.ndarray, end_logits: np.ndarray, tokenizer, *,
                     n_best_size: int = 20, max_answer_length: int = 30,
                     version_2: bool = True, null_score_diff_threshold: float = 0.0,
                     do_lower_case: bool = True) -> Prediction:
  """One question's prediction from the logits of its windows (`rows` of `features`)."""
  prelim = []  # (score, start_logit, end_logit, row, start, end)
  score_null, null_row, null_s, null_e = math.inf, None, 0.0, 0.0
  for row in rows:
    s_log, e_log = _masked(start_logits[row], features, row), _masked(end_logits[row],
                                                                       features, row)
    t2o = features["token_to_orig"][row]
    maxc = features["token_is_max_context"][row]
    if version_2:
      null = float(s_log[0] + e_log[0])
      if null < score_null:
        score_null, null_row, null_s, null_e = null, row, float(s_log[0]), float(e_log[0])
    starts = _best_indexes(s_log, n_best_size)
    ends = _best_indexes(e_log, n_best_size)
    for s in starts:
      if t2o[s] < 0 or not maxc[s]:
        continue
      for e in ends:
        if t2o[e] < 0 or e < s or e - s + 1 > max_answer_length:
          continue
        prelim.append((float(s_log[s] + e_log[e]), float(s_log[s]), float(e_log[e]), row,
                       int(s), int(e)))
  if version_2 and null_row is not None:
    prelim.append((score_null, null_s, null_e, null_row, 0, 0))
  # Stable sort on the score: equal scores keep candidate order, as the original.
  prelim.sort(key=lambda p: p[0], reverse=True)

  nbest, seen = [], set()
  for score, s_logit, e_logit, row, s, e in prelim:
    if len(nbest) >= n_best_size:
      break
    if s > 0:
      tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][row, s:e + 1])
      t2o = features["token_to_orig"][row]
      orig_text = " ".join(example.doc_tokens[t2o[s]:t2o[e] + 1])
      text = get_final_text(detokenize(tokens), orig_text, do_lower_case)
      if text in seen:
        continue
    else:
      text = ""
    seen.add(text)
    nbest.append({"text": text, "start_logit": s_logit, "end_logit": e_logit})
  if version_2 and "" not in seen and null_row is not None:
    nbest.append({"text": "", "start_logit": null_s, "end_logit": null_e})
  if not nbest:  # no valid candidate at all (e.g. an empty context in v1.1)
    nbest.append({"text": "", "start_logit": 0.0, "end_logit": 0.0})
  probs = _softmax([n["start_logit"] + n["end_logit"] for n in nbest])
  nbest = [{"text": n["text"], "probability": p, "start_logit": n["start_logit"],
            "end_logit": n["end_logit"]} for n, p in zip(nbest, probs)]

  best = next((n for n in nbest if n["text"]), None)
  if not version_2:
    text = nbest[0]["text"]
    return Prediction(text, text, 0.0, nbest)
  if best is None:
    return Prediction("", "", NO_ANSWER_ODDS, nbest)
  odds = score_null - best["start_logit"] - best["end_logit"]
  text = "" if odds > null_score_diff_threshold else best["text"]
  return Prediction(text, best["text"], float(odds), nbest)


def no_answer() -> Prediction:
  """The prediction of a question that has no window (skipped): an explicit ""."""
  return Prediction("", "", NO_ANSWER_ODDS,
                    [{"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}])


def example_rows(example_index: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
  """(example index, its feature rows) for consecutive windows of one example."""
  if len(example_index) == 0:
    return
  cuts = np.flatnonzero(np.diff(example_index)) + 1
  for rows in np.split(np.arange(len(example_index)), cuts):
    yield int(example_index[rows[0]]), rows


def postprocess(examples, features, start_logits, end_logits, tokenizer,
                **kwargs) -> dict[str, Prediction]:
  """qid -> Prediction for every example, in order (kwargs: predict_question's); one
  without windows (skipped in featurization) gets `no_answer()`."""
  done = {ei: predict_question(examples[ei], rows, features, start_logits, end_logits,
                               tokenizer, **kwargs)
          for ei, rows in example_rows(features["example_index"])}
  return {ex.qas_id: done.get(ei) or no_answer() for ei, ex in enumerate(examples)}


def with_threshold(preds: Mapping[str, Prediction], tau: float) -> dict[str, str]:
  """qid -> text at null-score threshold τ ("" iff null odds > τ)."""
  return {q: ("" if p.null_odds > tau else p.best_non_null) for q, p in preds.items()}


def evaluate(dataset_json, preds: Mapping[str, Prediction], version_2: bool,
             tau: float = 0.0) -> dict[str, Any]:
  """Official metrics at τ and, for v2.0, at the τ that maximises EM / F1.

  The search runs over each question's best non-null answer (not the τ-thresholded text
  of predictions.json), so best_f1_thresh is the true best τ: re-predicting with it gives
  best_f1 without another run.
  """
  if not version_2:
    return squad_eval.evaluate(dataset_json, {q: p.text for q, p in preds.items()},
                               version="1.1")
  answers = {q: p.best_non_null for q, p in preds.items()}
  odds = {q: p.null_odds for q, p in preds.items()}
  result = squad_eval.evaluate(dataset_json, answers, odds, na_prob_thresh=tau, version="2.0")
  for key in ("exact", "f1"):
    # The official search reports 0.0 when answering nothing is best; give a τ that
    # really predicts "" everywhere instead, so applying it reproduces the score.
    t = result[f"best_{key}_thresh"]
    if t != 0.0 or not odds:
      continue
    at = squad_eval.evaluate(dataset_json, answers, odds, na_prob_thresh=t, version="2.0")
    if abs(at[key] - result[f"best_{key}"]) > 1e-9:
      result[f"best_{key}_thresh"] = min(odds.values()) - 1.0
  result["null_score_diff_threshold"] = tau
  return result


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

def write_json_atomic(path: str, obj) -> str:
  """Writes JSON to path (local or gs://) so that no reader sees half a file
  (paths.write_text: temporary file + rename, one upload on gs://)."""
  paths.write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
  return path


class PredictionWriter:
  """Appends each question's prediction to `predictions.partial.jsonl` as it is made;
  `finalize` writes predictions.json, nbest_predictions.json and (v2.0) null_odds.json.

  Re-opening a directory after a crash picks up the questions already predicted
  (`done`), so a rerun only predicts the rest. Local directories append to the partial
  file; on gs:// (objects cannot be appended to) each flush rewrites it whole.
  """

  def __init__(self, output_dir: str, version_2: bool, resume_key: str | None = None):
    """resume_key: predictions of an earlier run are kept only if it used the same key
    (e.g. params + data file); None always starts afresh."""
    paths.makedirs(output_dir)
    self.output_dir = output_dir
    self.version_2 = version_2
    self.path = paths.join(output_dir, PARTIAL_FILE)
    self._remote = paths.is_remote(output_dir)
    key_path = self.path + ".key"
    old_key = paths.read_text(key_path) if paths.is_file(key_path) else None
    if resume_key is None or old_key != resume_key:
      paths.write_text(self.path, "")
    paths.write_text(key_path, resume_key or "")
    self._lines: list[str] = []
    self.preds: dict[str, Prediction] = self._read_partial()
    self._f = None if self._remote else paths.open(self.path, "a", encoding="utf-8")
    self.closed = False

  def _read_partial(self) -> dict[str, Prediction]:
    preds = {}
    if not paths.is_file(self.path):
      return preds
    raw = paths.read_text(self.path)
    lines = raw.split("\n")
    good = []
    for line in lines:
      if not line:
        continue
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        break  # the line a crash cut short; everything before it stands.
      preds[r["id"]] = Prediction(r["text"], r["best_non_null"], r["null_odds"], r["nbest"])
      good.append(line)
    text = "".join(l + "\n" for l in good)
    if raw != text:
      paths.write_text(self.path, text)  # drop a torn tail so appends start on a line.
    self._lines = good
    return preds

  @property
  def done(self) -> set[str]:
    return set(self.preds)

  def add(self, qid: str, pred: Prediction) -> None:
    self.preds[qid] = pred
    line = json.dumps({"id": qid, **dataclasses.asdict(pred)}, ensure_ascii=False)
    if self._f is not None:
      self._f.write(line + "\n")
    else:
      self._lines.append(line)

  def flush(self) -> None:
    if self._f is not None:
      self._f.flush()
      os.fsync(self._f.fileno())  # io: local-only (fsync of a local append-mode file)
    elif not self.closed:
      paths.write_text(self.path, "".join(l + "\n" for l in self._lines))

  def finalize(self, qids: Sequence[str] | None = None,
               tau: float | None = None) -> dict[str, str]:
    """Writes the prediction files (in `qids` order; at τ if given) -> {name: path}."""
    self.flush()
    qids = list(qids) if qids is not None else list(self.preds)
    preds = {q: self.preds[q] for q in qids if q in self.preds}
    texts = (with_threshold(preds, tau) if tau is not None and self.version_2
             else {q: p.text for q, p in preds.items()})
    join = lambda name: paths.join(self.output_dir, name)
    out = {"predictions": write_json_atomic(join("predictions.json"), texts),
           "nbest_predictions": write_json_atomic(
               join("nbest_predictions.json"), {q: p.nbest for q, p in preds.items()})}
    if self.version_2:
      out["null_odds"] = write_json_atomic(
          join("null_odds.json"), {q: p.null_odds for q, p in preds.items()})
    return out

  def close(self, complete: bool = False) -> None:
    """Closes the partial file; `complete` (all files written) also removes it."""
    if not self.closed:
      self.flush()
      if self._f is not None:
        self._f.close()
      self.closed = True
    if complete:
      for path in (self.path, self.path + ".key"):
        paths.remove(path)
