"""SQuAD v1.1 / v2.0: read the official JSON, build sliding-window BERT features.

Follows the original `run_squad.py` (read_squad_examples, convert_examples_to_features):
the context is split on white space into words; each word is WordPiece-tokenized (so
every sub-token maps back to one original word); the answer's character offset gives its
word span, tightened to the tokens of the answer text (`_improve_answer_span`); the
context tokens are cut into windows of `max_seq_length - len(question) - 3` tokens, each
start `doc_stride` after the last, and laid out as `[CLS] question [SEP] window [SEP]`.
A window whose target answer is not wholly inside it (or an unanswerable question)
targets [CLS] (position 0). Every context token records its original word
(`token_to_orig`, -1 elsewhere) and whether this window gives it its maximal context
(`token_is_max_context`), which postprocessing needs.

Bad input never crashes a run half way: structural errors (not JSON, no `data`, a
question without id/question) raise `SquadDataError` naming file/place/fix before any
work; per-question problems (no context, answer_start outside the context, an answer text
not found at its offset, over `max_windows` windows, a repeated id) are skipped and
counted in `ReadStats` / `FeatureStats` with the question ids.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from bert_jax import paths
from bert_jax.config import SQUAD_MAX_WINDOWS

# Windows per question above which the question is skipped (and counted): a guard
# against pathological contexts (100 windows at doc_stride 128 is ~13k tokens).
DEFAULT_MAX_WINDOWS = SQUAD_MAX_WINDOWS  # config.squad.max_windows' default


class SquadDataError(ValueError):
  """A SQuAD file is unusable; the message names the file, the place and the fix."""


@dataclasses.dataclass
class SquadExample:
  """One question with its context split into white-space words."""
  qas_id: str
  question: str
  context: str
  doc_tokens: list[str]
  # Every gold answer text (v2.0 unanswerable: none); the evaluator's ground truth.
  answers: list[str]
  is_impossible: bool = False
  # Training target (first answer): its text and word span; None when unanswerable.
  answer_text: str | None = None
  start_word: int | None = None
  end_word: int | None = None


@dataclasses.dataclass
class ReadStats:
  """What reading skipped or noticed, by reason -> question ids."""
  skipped: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  no_context: list[str] = dataclasses.field(default_factory=list)
  num_questions: int = 0

  def summary(self) -> str:
    parts = [f"{len(v)} {k}" for k, v in sorted(self.skipped.items())]
    if self.no_context:
      parts.append(f"{len(self.no_context)} without context")
    return f"{self.num_questions} questions" + (f" ({', '.join(parts)})" if parts else "")


def is_whitespace(c: str) -> bool:
  """The original's white space: space, tab, CR, LF, NARROW NO-BREAK SPACE."""
  return c in " \t\r\n" or ord(c) == 0x202F


def split_words(context: str) -> tuple[list[str], list[int]]:
  """(white-space words, char index -> word index) exactly as read_squad_examples."""
  words: list[str] = []
  char_to_word: list[int] = []
  prev_is_ws = True
  for c in context:
    if is_whitespace(c):
      prev_is_ws = True
    else:
      if prev_is_ws:
        words.append(c)
      else:
        words[-1] += c
      prev_is_ws = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def load_squad_json(path: str) -> dict[str, Any]:
  """Parses a SQuAD JSON file with a clear error for a missing or malformed file."""
  if not paths.is_file(path):
    raise SquadDataError(f"SQuAD file not found: {path!r}; set --config.squad.train_file / "
                         "dev_file / predict_file to an official SQuAD JSON file.")
  try:
    data = json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise SquadDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno}); re-download the official SQuAD file.") from None
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise SquadDataError(f"{path}: top level must be {{'version': ..., 'data': [articles]}} "
                         "as in the official SQuAD files.")
  return data


def _answer_span(qa, context, char_to_word, words):
  """(text, start_word, end_word) of the first answer, or (reason, detail) if unusable."""
  answers = qa.get("answers") or []
  if not answers:
    return None, ("no_answer", "answerable question without answers")
  a = answers[0]
  text, start = a.get("text"), a.get("answer_start")
  if not isinstance(text, str) or not text.strip() or not isinstance(start, int):
    return None, ("bad_answer", f"answer {a!r} needs a non-empty 'text' and int "
                  "'answer_start'")
  if start < 0 or start + len(text) > len(context):
    return None, ("answer_outside_context",
                  f"answer_start={start} + len={len(text)} outside context of {len(context)}"
                  " chars")
  start_word = char_to_word[start]
  end_word = char_to_word[start + len(text) - 1]
  if start_word < 0:  # answer begins in leading white space
    start_word = 0
  actual = " ".join(words[start_word:end_word + 1])
  cleaned = " ".join(text.split())
  if actual.find(cleaned) == -1:
    return None, ("answer_text_mismatch", f"{cleaned!r} not in {actual!r}")
  return (text, start_word, end_word), None


def read_squad(path_or_json: str | dict, is_training: bool,
               version: str | None = None) -> tuple[list[SquadExample], ReadStats]:
  """Official SQuAD JSON -> examples (+ what was skipped and why).

  Training keeps only questions with a usable target (first answer found at its offset,
  or v2.0 unanswerable); evaluation keeps every question (answers are only read as text).
  """
  name = path_or_json if isinstance(path_or_json, str) else "<json>"
  data = load_squad_json(path_or_json) if isinstance(path_or_json, str) else path_or_json
  examples: list[SquadExample] = []
  stats = ReadStats()
  seen: set[str] = set()
  for ai, article in enumerate(data["data"]):
    paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
    if not isinstance(paragraphs, list):
      raise SquadDataError(f"{name}: data[{ai}] has no 'paragraphs' list.")
    for pi, paragraph in enumerate(paragraphs):
      where = f"{name}: data[{ai}].paragraphs[{pi}]"
      if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas", []), list):
        raise SquadDataError(f"{where} must be an object with 'context' and a 'qas' list.")
      context = paragraph.get("context") or ""
      if not isinstance(context, str):
        raise SquadDataError(f"{where}.context must be a string, got {type(context).__name__}.")
      words, char_to_word = split_words(context)
      for qi, qa in enumerate(paragraph.get("qas", [])):
        if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not isinstance(
            qa.get("question"), str):
          raise SquadDataError(f"{where}.qas[{qi}] needs string 'id' and 'question' keys.")
        qid = qa["id"]
        stats.num_questions += 1
        if qid in seen:
          stats.skipped["duplicate_id"].append(qid)
          continue
        seen.add(qid)
        is_impossible = bool(qa.get("is_impossible", False))
        gold = [a.get("text", "") for a in qa.get("answers") or [] if isinstance(a, dict)]
        ex = SquadExample(qid, qa["question"], context, words, gold, is_impossible)
        if not words:
          stats.no_context.append(qid)
          if is_training:
            stats.skipped["no_context"].append(qid)
            continue
        if is_training and not is_impossible:
          span, problem = _answer_span(qa, context, char_to_word, words)
          if span is None:
            stats.skipped[problem[0]].append(qid)
            continue
          ex.answer_text, ex.start_word, ex.end_word = span
        examples.append(ex)
  stats.skipped = dict(stats.skipped)
  return examples, stats


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class TokenizedContext:
  """A context's sub-tokens and the maps between them and its white-space words."""
  ids: list[int]
  tok_to_orig: list[int]  # sub-token -> word
  orig_to_tok: list[int]  # word -> its first sub-token


def tokenize_context(words: Sequence[str], tokenizer) -> TokenizedContext:
  """WordPiece each word separately (as the original), in one batched call."""
  ids: list[int] = []
  tok_to_orig: list[int] = []
  orig_to_tok: list[int] = []
  for i, word_ids in enumerate(tokenizer.encode_batch(list(words)) if words else []):
    orig_to_tok.append(len(ids))
    ids.extend(word_ids)
    tok_to_orig.extend([i] * len(word_ids))
  return TokenizedContext(ids, tok_to_orig, orig_to_tok)


def improve_answer_span(doc_ids: Sequence[int], start: int, end: int,
                        answer_ids: Sequence[int]) -> tuple[int, int]:
  """The smallest sub-span of [start, end] whose tokens are the answer's (original)."""
  n = len(answer_ids)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if new_end - new_start + 1 == n and list(doc_ids[new_start:new_end + 1]) == list(
          answer_ids):
        return new_start, new_end
  return start, end


def answer_token_span(ex: SquadExample, ctx: TokenizedContext, tokenizer) -> tuple[int, int]:
  """The training answer's [start, end] sub-token indices in the context."""
  start = ctx.orig_to_tok[ex.start_word]
  if ex.end_word < len(ex.doc_tokens) - 1:
    end = ctx.orig_to_tok[ex.end_word + 1] - 1
  else:
    end = len(ctx.ids) - 1
  return improve_answer_span(ctx.ids, start, end, tokenizer.encode(ex.answer_text))


def doc_spans(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) windows over the context tokens; one empty window if none."""
  spans = []
  start = 0
  while start < num_tokens:
    length = min(num_tokens - start, max_tokens_for_doc)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, doc_stride)
  return spans or [(0, 0)]


def max_context_mask(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
  """[num_spans, num_tokens] bool: span i is the token's max-context span (original rule:
  score = min(left, right context) + 0.01 * span length, first best wins)."""
  pos = np.arange(num_tokens)[None, :]
  starts = np.array([s for s, _ in spans])[:, None]
  lengths = np.array([l for _, l in spans])[:, None]
  ends = starts + lengths - 1
  score = np.minimum(pos - starts, ends - pos) + 0.01 * lengths
  score = np.where((pos >= starts) & (pos <= ends), score, -np.inf)
  best = np.argmax(score, axis=0)
  return best[None, :] == np.arange(len(spans))[:, None]


@dataclasses.dataclass
class FeatureStats:
  """What featurization skipped (reason -> question ids) and counted."""
  skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  num_windows: int = 0
  # Training windows whose answer lies outside them (target [CLS]).
  num_out_of_span: int = 0


FEATURE_KEYS = ("input_ids", "token_type_ids", "attention_mask", "start_positions",
                "end_positions", "example_index", "token_to_orig", "token_is_max_context")
MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def featurize(examples: Sequence[SquadExample], tokenizer, max_seq_length: int = 384,
              doc_stride: int = 128, max_query_length: int = 64, is_training: bool = False,
              max_windows: int = DEFAULT_MAX_WINDOWS,
              progress=None) -> tuple[dict[str, np.ndarray], FeatureStats]:
  """Examples -> window features as numpy arrays, each row one window.

  Keys: input_ids, token_type_ids, attention_mask [N, S] int32; start_positions,
  end_positions [N] (0 = [CLS]; targets only for training examples, i.e. read with
  is_training, else 0); example_index [N] (index into
  `examples`); token_to_orig [N, S] int32 (original word of a context token, -1
  elsewhere); token_is_max_context [N, S] bool. Windows of one example are consecutive.
  """
  if max_seq_length < max_query_length + 4:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the context after "
                     f"max_query_length={max_query_length}: raise it or lower the query cap.")
  stats = FeatureStats()
  skipped = collections.defaultdict(list)
  rows = {k: [] for k in FEATURE_KEYS}
  cache: dict[int, TokenizedContext] = {}  # id(doc_tokens list) -> tokenized context
  queries = tokenizer.encode_batch([ex.question for ex in examples]) if examples else []
  for ei, ex in enumerate(examples):
    key = id(ex.doc_tokens)
    if key not in cache:
      cache = {key: tokenize_context(ex.doc_tokens, tokenizer)}  # contexts are contiguous
    ctx = cache[key]
    query = queries[ei][:max_query_length]
    max_doc = max_seq_length - len(query) - 3
    spans = doc_spans(len(ctx.ids), max_doc, doc_stride)
    if len(spans) > max_windows:
      skipped["too_many_windows"].append(ex.qas_id)
      continue
    target = None
    if is_training and not ex.is_impossible and ex.start_word is not None:
      target = answer_token_span(ex, ctx, tokenizer)
    is_max = max_context_mask(spans, len(ctx.ids)) if ctx.ids else None
    offset = len(query) + 2
    for si, (start, length) in enumerate(spans):
      ids = np.full(max_seq_length, tokenizer.pad_id, np.int32)
      seq = [tokenizer.cls_id, *query, tokenizer.sep_id, *ctx.ids[start:start + length],
             tokenizer.sep_id]
      ids[:len(seq)] = seq
      types = np.zeros(max_seq_length, np.int32)
      types[offset:len(seq)] = 1
      mask = np.zeros(max_seq_length, np.int32)
      mask[:len(seq)] = 1
      t2o = np.full(max_seq_length, -1, np.int32)
      t2o[offset:offset + length] = ctx.tok_to_orig[start:start + length]
      maxc = np.zeros(max_seq_length, bool)
      if length:
        maxc[offset:offset + length] = is_max[si, start:start + length]
      s_pos = e_pos = 0
      if target is not None:
        if target[0] >= start and target[1] <= start + length - 1:
          s_pos, e_pos = target[0] - start + offset, target[1] - start + offset
        else:
          stats.num_out_of_span += 1
      for k, v in zip(FEATURE_KEYS, (ids, types, mask, s_pos, e_pos, ei, t2o, maxc)):
        rows[k].append(v)
    if progress is not None:
      progress(ei + 1, len(examples))
  stats.skipped = dict(skipped)
  stats.num_windows = len(rows["input_ids"])
  if not rows["input_ids"]:
    empty = {k: np.zeros((0, max_seq_length), np.int32) for k in MODEL_KEYS}
    empty.update(start_positions=np.zeros(0, np.int32), end_positions=np.zeros(0, np.int32),
                 example_index=np.zeros(0, np.int32),
                 token_to_orig=np.zeros((0, max_seq_length), np.int32),
                 token_is_max_context=np.zeros((0, max_seq_length), bool))
    return empty, stats
  out = {k: np.stack(v) if np.ndim(v[0]) else np.asarray(v, np.int32)
         for k, v in rows.items()}
  return out, stats


def add_unanswerable(dataset: dict, share: float, seed: int = 0) -> tuple[dict, int]:
  """SQuAD v2.0 JSON with questions made unanswerable added until `share` have no answer.

  Each added question is an answerable one, asked of a different paragraph of its own
  article (same topic, so the question stays plausible) whose context holds none of its
  gold answer texts; it gets a new id (`<id>_neg`), `is_impossible` and no answers. The
  picks are deterministic in `seed`. Returns (new dataset, questions added).
  """
  out = copy.deepcopy(dataset)
  qas = [(a, p, qa) for a, art in enumerate(out["data"])
         for p, par in enumerate(art["paragraphs"]) for qa in par["qas"]]
  n, unans = len(qas), sum(bool(qa.get("is_impossible")) for _, _, qa in qas)
  if not 0.0 < share < 1.0:
    raise ValueError(f"unanswerable_share={share}: use a share in (0, 1), e.g. 0.334 (the "
                     "official train-v2.0 file's)")
  want = int(np.ceil((share * n - unans) / (1.0 - share)))
  rng = np.random.default_rng(seed)
  added = 0
  for i in rng.permutation(n):
    if added >= want:
      break
    a, p, qa = qas[i]
    pars = out["data"][a]["paragraphs"]
    if qa.get("is_impossible") or len(pars) < 2:
      continue
    golds = [g["text"].lower() for g in qa.get("answers") or [] if g.get("text")]
    other = [j for j in rng.permutation(len(pars)) if j != p]
    j = next((j for j in other[:10]
              if not any(g in pars[j]["context"].lower() for g in golds)), None)
    if j is None:
      continue
    pars[j]["qas"].append({"id": f"{qa['id']}_neg", "question": qa["question"],
                           "answers": [], "is_impossible": True})
    added += 1
  if added < want:
    raise ValueError(f"could add only {added} of {want} unanswerable questions: the articles "
                     "have too few paragraphs without the answers; ask for a smaller share")
  return out, added
