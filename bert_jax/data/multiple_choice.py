"""Multiple-choice data (SWAG, CommonsenseQA, ...): readers and BERT features.

Every reader yields `MultipleChoiceExample`s: a context (SWAG `sent1`), the shared start
of the endings (SWAG `sent2`, "" elsewhere), N endings and a label (None when the file
has none, e.g. SWAG test.csv). Features follow the original `run_swag.py`: per choice,
`[CLS] context [SEP] start_ending ending_i [SEP]` with segment ids 0 then 1, the pair
truncated by popping the last token of the longer side (`_truncate_seq_pair`), so one
example becomes arrays of shape [num_choices, max_seq_length]. Bad rows raise
`MultipleChoiceError` naming the file, the row and the fix.

Formats:
- `swag_csv`: the official SWAG CSVs (train.csv / val.csv with a label column, test.csv
  without), header `,video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0..3,label`.
- `swag_jsonl`: TFDS/Hugging-Face-style JSON lines with `sent1`, `sent2`, `ending0..N-1`,
  optional `label` (-1 or absent = unlabelled).
- `commonsense_qa`: the Hugging Face `tau/commonsense_qa` JSON lines (`question`,
  `choices: {label, text}`, `answerKey`): context = question, ending i = choices.text[i],
  label = position of answerKey in choices.label ("ABCDE".index for the official files).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import io
from typing import Iterable, Sequence

import numpy as np

# The original's _truncate_seq_pair (pop from the longer side), shared with GLUE.
from bert_jax import paths
from bert_jax.data import tfds_sources
from bert_jax.data.batching import truncate_seq_pair

SWAG_HEADER = (
    "", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
    "ending0", "ending1", "ending2", "ending3", "label")
FORMATS = ("swag_csv", "swag_jsonl", "commonsense_qa")


class MultipleChoiceError(ValueError):
  """A multiple-choice data file is unusable; the message names file, row and fix."""


@dataclasses.dataclass(frozen=True)
class MultipleChoiceExample:
  """One question: context, shared start of the endings, the endings, gold label or None."""
  example_id: str
  context: str
  start_ending: str
  endings: tuple[str, ...]
  label: int | None = None

  @property
  def num_choices(self) -> int:
    return len(self.endings)


def _where(path: str, row: int, line: int | None = None) -> str:
  return f"{path}, row {row}" + (f" (line {line})" if line is not None else "")


def _check_endings(endings: Sequence, names: Sequence[str], where: str) -> tuple[str, ...]:
  for name, ending in zip(names, endings):
    if ending is None or not str(ending).strip():
      raise MultipleChoiceError(
          f"{where}: {name} is missing or empty; every row needs all of its endings "
          "(fix or drop the row).")
  return tuple(str(e) for e in endings)


def _check_label(label, num_choices: int, where: str, require_labels: bool) -> int | None:
  """An int in 0..num_choices-1, or None (unlabelled) unless labels are required."""
  if label is None or (isinstance(label, str) and not label.strip()):
    if require_labels:
      raise MultipleChoiceError(
          f"{where}: no label; training and evaluation files need one (use the file "
          "only as a test set for predictions).")
    return None
  try:
    value = int(str(label).strip())
  except ValueError:
    raise MultipleChoiceError(
        f"{where}: label {label!r} is not an integer in 0..{num_choices - 1}.") from None
  if value == -1 and not require_labels:  # TFDS/HF test splits mark "no label" with -1.
    return None
  if not 0 <= value < num_choices:
    raise MultipleChoiceError(
        f"{where}: label {value} is outside 0..{num_choices - 1} (the row has "
        f"{num_choices} endings).")
  return value


def _open(path: str):
  if not paths.is_file(path):
    raise MultipleChoiceError(
        f"data file not found: {path!r}; set config.swag.train_file/dev_file/test_file "
        "to existing files.")
  # As open(path, encoding="utf-8", newline=""), local or gs://.
  return io.StringIO(paths.read_bytes(path).decode("utf-8"), newline="")


def read_swag_csv(path: str, require_labels: bool = True) -> list[MultipleChoiceExample]:
  """Official SWAG CSV (train.csv, val.csv; test.csv has no label column).

  The id is the unnamed first column (the row's index in the official file).
  """
  with _open(path) as f:
    reader = csv.reader(f)
    header = tuple(next(reader, ()))
    if header and header[0].startswith("\ufeff"):
      header = (header[0][1:],) + header[1:]
    has_label = header == SWAG_HEADER
    if not has_label and header != SWAG_HEADER[:-1]:
      raise MultipleChoiceError(
          f"{_where(path, 1, 1)}: header {','.join(header)!r} is not the official SWAG "
          f"header {','.join(SWAG_HEADER)!r} (test.csv: the same without ',label'); for "
          "JSON lines use config.swag.format='swag_jsonl'.")
    if require_labels and not has_label:
      raise MultipleChoiceError(
          f"{path}: no 'label' column; training and evaluation need the labelled "
          "train.csv / val.csv (test.csv is for predictions only).")
    names = header[7:11]
    examples = []
    for row_num, row in enumerate(reader, start=2):
      if not row:  # a blank line (e.g. at the end of the file)
        continue
      where = _where(path, row_num, reader.line_num)
      if len(row) != len(header):
        raise MultipleChoiceError(
            f"{where}: {len(row)} columns, the header has {len(header)} (a missing "
            "ending or an unquoted comma); fix or drop the row.")
      endings = _check_endings(row[7:11], names, where)
      label = _check_label(row[11] if has_label else None, len(endings), where,
                           require_labels)
      examples.append(MultipleChoiceExample(
          example_id=row[0] or str(row_num - 2), context=row[4], start_ending=row[5],
          endings=endings, label=label))
  return examples


def _json_lines(path: str) -> Iterable[tuple[int, dict]]:
  with _open(path) as f:
    for line_num, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise MultipleChoiceError(
            f"{_where(path, line_num)}: not valid JSON ({e.msg}); one JSON object per "
            "line expected.") from None
      if not isinstance(record, dict):
        raise MultipleChoiceError(f"{_where(path, line_num)}: expected a JSON object.")
      yield line_num, record


def read_swag_jsonl(path: str, num_choices: int = 4,
                    require_labels: bool = True) -> list[MultipleChoiceExample]:
  """TFDS/HF-style JSON lines: sent1, sent2, ending0..ending{num_choices-1}, label."""
  names = [f"ending{i}" for i in range(num_choices)]
  examples = []
  for row, record in _json_lines(path):
    where = _where(path, row)
    if "sent1" not in record:
      raise MultipleChoiceError(
          f"{where}: no 'sent1' key (has {sorted(record)}); SWAG JSON lines need sent1, "
          f"sent2, {', '.join(names)} and label.")
    endings = _check_endings([record.get(n) for n in names], names, where)
    label = _check_label(record.get("label"), num_choices, where, require_labels)
    example_id = record.get("id", record.get("fold-ind", row - 1))
    examples.append(MultipleChoiceExample(
        example_id=str(example_id), context=str(record["sent1"]),
        start_ending=str(record.get("sent2") or ""), endings=endings, label=label))
  return examples


def read_commonsense_qa(path: str, num_choices: int = 5,
                        require_labels: bool = True) -> list[MultipleChoiceExample]:
  """HF `tau/commonsense_qa` JSON lines -> context=question, endings=choices.text."""
  examples = []
  for row, record in _json_lines(path):
    where = _where(path, row)
    choices = record.get("choices")
    if "question" not in record or not isinstance(choices, dict) or "text" not in choices:
      raise MultipleChoiceError(
          f"{where}: expected keys 'question' and 'choices': {{'label': [...], 'text': "
          f"[...]}} (the Hugging Face commonsense_qa layout); got {sorted(record)}.")
    texts = list(choices["text"])
    keys = [str(k) for k in choices.get("label", "ABCDEFGHIJ"[:len(texts)])]
    if len(texts) != num_choices or len(keys) != len(texts):
      raise MultipleChoiceError(
          f"{where}: {len(texts)} choice texts and {len(keys)} choice labels, expected "
          f"{num_choices} of each (config.swag.num_choices); fix or drop the row.")
    endings = _check_endings(texts, [f"choices.text[{i}]" for i in range(len(texts))],
                             where)
    answer = record.get("answerKey") or None
    if answer is not None:
      if answer not in keys:
        raise MultipleChoiceError(
            f"{where}: answerKey {answer!r} is not one of the choice labels {keys} (label "
            f"outside 0..{num_choices - 1}).")
      answer = keys.index(answer)
    label = _check_label(answer, num_choices, where, require_labels)
    examples.append(MultipleChoiceExample(
        example_id=str(record.get("id", row - 1)), context=str(record["question"]),
        start_ending="", endings=endings, label=label))
  return examples


def infer_format(path: str, dataset: str) -> str:
  """'commonsense_qa' for that dataset; else swag_csv for .csv files, swag_jsonl otherwise."""
  if dataset == "commonsense_qa":
    return "commonsense_qa"
  return "swag_csv" if path.lower().endswith(".csv") else "swag_jsonl"


def read_examples(path: str, fmt: str, num_choices: int, require_labels: bool = True,
                  tfds_data_dir: str = "") -> list[MultipleChoiceExample]:
  """Reads `path` in format `fmt` (see FORMATS); every example has num_choices endings.
  `tfds:hellaswag#SPLIT` reads TFDS from tfds_data_dir (data/tfds_sources.py)."""
  if tfds_sources.is_tfds(path):
    name, _, split = path.partition("#")
    examples = [MultipleChoiceExample(str(r["id"]), r["context"], "", tuple(r["endings"]),
                                      r["label"]) for r in tfds_sources.multiple_choice_rows(
                                          name, split or "train", tfds_data_dir)]
  elif fmt == "swag_csv":
    examples = read_swag_csv(path, require_labels)
    if examples and num_choices != 4:
      raise MultipleChoiceError(
          f"{path}: SWAG CSVs have 4 endings, config.swag.num_choices={num_choices}; "
          "set it to 4.")
  elif fmt == "swag_jsonl":
    examples = read_swag_jsonl(path, num_choices, require_labels)
  elif fmt == "commonsense_qa":
    examples = read_commonsense_qa(path, num_choices, require_labels)
  else:
    raise MultipleChoiceError(f"unknown multiple-choice format {fmt!r}; use one of {FORMATS}.")
  if not examples:
    raise MultipleChoiceError(f"{path}: no examples (empty file?).")
  return examples


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------

def _ending_texts(example: MultipleChoiceExample) -> list[str]:
  # Tokenizing "start ending" equals tokenizing both and concatenating (the original
  # does the latter): WordPiece never merges across whitespace.
  start = example.start_ending.strip()
  return [f"{start} {e}" if start else e for e in example.endings]


def tokenize_examples(examples: Sequence[MultipleChoiceExample], tokenizer):
  """-> (context ids per example, ending ids per example per choice), batch-encoded."""
  contexts = tokenizer.encode_batch([e.context for e in examples])
  flat = tokenizer.encode_batch([t for e in examples for t in _ending_texts(e)])
  endings, i = [], 0
  for e in examples:
    endings.append(flat[i:i + e.num_choices])
    i += e.num_choices
  return contexts, endings


def longest_sequence(examples: Sequence[MultipleChoiceExample], tokenizer) -> int:
  """Length of the longest [CLS] context [SEP] ending [SEP] over all choices, untruncated."""
  contexts, endings = tokenize_examples(examples, tokenizer)
  return max(len(c) + len(e) + 3 for c, es in zip(contexts, endings) for e in es)


def convert_examples_to_features(examples: Sequence[MultipleChoiceExample], tokenizer,
                                 max_seq_length: int) -> dict[str, np.ndarray]:
  """Examples -> {input_ids, token_type_ids, attention_mask: int32 [N, C, S],
  labels: int32 [N] (-1 = unlabelled), example_weight: float32 [N] (1.0)}."""
  if max_seq_length < 4:
    raise MultipleChoiceError(
        f"max_seq_length={max_seq_length} leaves no room for [CLS] x [SEP] y [SEP].")
  num_choices = {e.num_choices for e in examples}
  if len(num_choices) != 1:
    raise MultipleChoiceError(
        f"examples have different numbers of choices {sorted(num_choices)}; one split "
        "must have the same number everywhere.")
  c = num_choices.pop()
  n = len(examples)
  input_ids = np.full((n, c, max_seq_length), tokenizer.pad_id, np.int32)
  token_type_ids = np.zeros((n, c, max_seq_length), np.int32)
  attention_mask = np.zeros((n, c, max_seq_length), np.int32)
  contexts, endings = tokenize_examples(examples, tokenizer)
  for i, (context, choice_endings) in enumerate(zip(contexts, endings)):
    for j, ending in enumerate(choice_endings):
      a, b = list(context), list(ending)  # copies: truncation differs per choice.
      truncate_seq_pair(a, b, max_seq_length - 3)
      ids = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
      input_ids[i, j, :len(ids)] = ids
      token_type_ids[i, j, len(a) + 2:len(ids)] = 1
      attention_mask[i, j, :len(ids)] = 1
  labels = np.array([-1 if e.label is None else e.label for e in examples], np.int32)
  return {"input_ids": input_ids, "token_type_ids": token_type_ids,
          "attention_mask": attention_mask, "labels": labels,
          "example_weight": np.ones((n,), np.float32)}
