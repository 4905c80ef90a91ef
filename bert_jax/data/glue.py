"""GLUE readers: the nine tasks (+ the AX diagnostic) from the canonical TSVs or TFDS.

The TSV layouts are those GLUE's download script writes (see ../shared/data/README.md):
columns are found by header name, except CoLA train/dev, which have no header (source,
label, original mark, sentence). Files are read as UTF-8 (a leading byte-order mark, as in
MRPC, is dropped) with no quote processing, as the original run_classifier.py does. A row
with a missing column or a label outside the task's label set raises `GlueDataError`
naming the file, the line and the fix. TFDS (`glue/<task>`) is an optional second source,
imported only when asked for.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from typing import Sequence

from bert_jax import paths
from bert_jax.data import tfds_sources

QUOTE_NONE_TSV = dict(delimiter="\t", quoting=csv.QUOTE_NONE)


class GlueDataError(ValueError):
  """A GLUE file is missing or malformed, or a task name is unknown."""


@dataclasses.dataclass(frozen=True)
class GlueExample:
  """One sentence (pair); label is a label name, a float (STS-B) or None (test)."""
  guid: str  # "<split>-<row>": unique within the task.
  index: str  # the id written to submission files (test `index`/`id` column).
  text_a: str
  text_b: str | None
  label: str | float | None


@dataclasses.dataclass(frozen=True)
class GlueTaskSpec:
  """File layout, labels, metrics and submission names of one GLUE task."""
  name: str  # canonical lower-case name: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli
  dirname: str  # folder under the GLUE data dir
  labels: tuple[str, ...] | None  # label names as in the files; None = regression
  text_a: str  # header column of the first sentence
  text_b: str | None  # header column of the second sentence (None: single sentence)
  label_column: str
  index_column: str  # test-file id column
  metrics: tuple[str, ...]  # official metrics; the first is the headline
  train_split: str = "train"
  eval_splits: tuple[str, ...] = ("dev",)
  # split -> submission file name (the GLUE server's names).
  submission: tuple[tuple[str, str], ...] = ()
  tfds_name: str = ""
  tfds_fields: tuple[str, ...] = ()
  tfds_labels: tuple[str, ...] = ()  # TFDS int label -> our label name
  headerless: tuple[str, ...] = ()  # splits whose files have no header (CoLA train/dev)
  positional_header: tuple[str, ...] = ()  # column names for headerless files

  @property
  def is_regression(self) -> bool:
    return self.labels is None

  @property
  def num_labels(self) -> int:
    return 1 if self.labels is None else len(self.labels)

  @property
  def predict_splits(self) -> tuple[str, ...]:
    return tuple(s for s, _ in self.submission)

  def submission_file(self, split: str) -> str:
    return dict(self.submission)[split]


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
TASKS: dict[str, GlueTaskSpec] = {t.name: t for t in [
    GlueTaskSpec("cola", "CoLA", _BIN, "sentence", None, "label", "index",
                 ("matthews_corrcoef",), submission=(("test", "CoLA.tsv"),),
                 tfds_name="glue/cola", tfds_fields=("sentence",), tfds_labels=_BIN,
                 headerless=("train", "dev"),
                 positional_header=("source", "label", "original_mark", "sentence")),
    GlueTaskSpec("sst2", "SST-2", _BIN, "sentence", None, "label", "index", ("accuracy",),
                 submission=(("test", "SST-2.tsv"),), tfds_name="glue/sst2",
                 tfds_fields=("sentence",), tfds_labels=_BIN),
    GlueTaskSpec("mrpc", "MRPC", _BIN, "#1 String", "#2 String", "Quality", "index",
                 ("f1", "accuracy"), submission=(("test", "MRPC.tsv"),),
                 tfds_name="glue/mrpc", tfds_fields=("sentence1", "sentence2"),
                 tfds_labels=_BIN),
    GlueTaskSpec("stsb", "STS-B", None, "sentence1", "sentence2", "score", "index",
                 ("pearson", "spearman"), submission=(("test", "STS-B.tsv"),),
                 tfds_name="glue/stsb", tfds_fields=("sentence1", "sentence2")),
    GlueTaskSpec("qqp", "QQP", _BIN, "question1", "question2", "is_duplicate", "id",
                 ("f1", "accuracy"), submission=(("test", "QQP.tsv"),),
                 tfds_name="glue/qqp", tfds_fields=("question1", "question2"),
                 tfds_labels=_BIN),
    GlueTaskSpec("mnli", "MNLI", ("contradiction", "entailment", "neutral"), "sentence1",
                 "sentence2", "gold_label", "index", ("accuracy",),
                 eval_splits=("dev_matched", "dev_mismatched"),
                 submission=(("test_matched", "MNLI-m.tsv"),
                             ("test_mismatched", "MNLI-mm.tsv"), ("ax", "AX.tsv")),
                 tfds_name="glue/mnli", tfds_fields=("premise", "hypothesis"),
                 tfds_labels=("entailment", "neutral", "contradiction")),
    GlueTaskSpec("qnli", "QNLI", _NLI2, "question", "sentence", "label", "index",
                 ("accuracy",), submission=(("test", "QNLI.tsv"),), tfds_name="glue/qnli",
                 tfds_fields=("question", "sentence"), tfds_labels=_NLI2),
    GlueTaskSpec("rte", "RTE", _NLI2, "sentence1", "sentence2", "label", "index",
                 ("accuracy",), submission=(("test", "RTE.tsv"),), tfds_name="glue/rte",
                 tfds_fields=("sentence1", "sentence2"), tfds_labels=_NLI2),
    GlueTaskSpec("wnli", "WNLI", _BIN, "sentence1", "sentence2", "label", "index",
                 ("accuracy",), submission=(("test", "WNLI.tsv"),), tfds_name="glue/wnli",
                 tfds_fields=("sentence1", "sentence2"), tfds_labels=_BIN),
]}
TASK_NAMES = tuple(TASKS)
# AX (diagnostic): MNLI-style pairs without labels, predicted by the MNLI model.
AX_FILES = ("AX/AX.tsv", "diagnostic/diagnostic.tsv", "MNLI/AX.tsv", "AX.tsv")
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str) -> GlueTaskSpec:
  """The spec of a task name (case-insensitive; SST-2/STS-B spellings accepted)."""
  key = _ALIASES.get(name.strip().lower(), name.strip().lower().replace("-", ""))
  if key == "ax":
    raise GlueDataError(
        "the AX diagnostic has no training data: it is predicted by the MNLI model "
        "(run --config.glue.task=mnli; AX.tsv is written beside MNLI-m.tsv).")
  if key not in TASKS:
    raise GlueDataError(
        f"unknown GLUE task {name!r}: use one of {', '.join(TASK_NAMES)} (or 'all').")
  return TASKS[key]


def split_file(spec: GlueTaskSpec, split: str, data_dir: str) -> str:
  """Path of a split's TSV under data_dir (AX: the first of AX_FILES that exists)."""
  if split == "ax":
    for rel in AX_FILES:
      path = paths.join(data_dir, rel)
      if paths.is_file(path):
        return path
    return paths.join(data_dir, AX_FILES[0])
  return paths.join(data_dir, spec.dirname, f"{split}.tsv")


def _is_labelled(split: str) -> bool:
  return not (split.startswith("test") or split == "ax")


def _parse_label(spec: GlueTaskSpec, value: str, where: str) -> str | float:
  value = value.strip()
  if spec.is_regression:
    try:
      return float(value)
    except ValueError:
      raise GlueDataError(
          f"{where}: {spec.label_column} {value!r} is not a number (STS-B scores are "
          "floats in [0, 5]); fix or drop the row.") from None
  if value not in spec.labels:
    raise GlueDataError(
        f"{where}: unknown label {value!r} for {spec.dirname}; expected one of "
        f"{list(spec.labels)} in column {spec.label_column!r} (fix or drop the row).")
  return value


def read_tsv(spec: GlueTaskSpec, split: str, path: str) -> list[GlueExample]:
  """One GLUE TSV in the official layout -> examples (labels checked against the task)."""
  if not paths.is_file(path):
    raise GlueDataError(
        f"{spec.dirname} {split} file not found: {path}; point config.glue.data_dir at "
        "the folder GLUE's download_glue_data.py wrote (with <TASK>/<split>.tsv), or use "
        "config.glue.source='tfds'.")
  labelled = _is_labelled(split)
  examples = []
  # As open(path, encoding="utf-8-sig", newline=""), local or gs://.
  with io.StringIO(paths.read_bytes(path).decode("utf-8-sig"), newline="") as f:
    reader = csv.reader(f, **QUOTE_NONE_TSV)
    if split in spec.headerless:
      header = list(spec.positional_header)
    else:
      header = [h.strip() for h in next(reader, [])]
    needed = [spec.text_a] + ([spec.text_b] if spec.text_b else [])
    needed += [spec.label_column] if labelled else [spec.index_column]
    missing = [c for c in needed if c not in header]
    if missing:
      raise GlueDataError(
          f"{path}, line 1: header {header} lacks column(s) {missing}; the GLUE "
          f"{spec.dirname} {split} layout has {needed} (is this the right task/split?).")
    col = {c: header.index(c) for c in needed}
    row_num = 0
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        continue
      where = f"{path}, line {reader.line_num}"
      if len(row) != len(header):
        raise GlueDataError(
            f"{where}: {len(row)} columns, expected {len(header)} ({'/'.join(header)}): "
            "a missing column or a stray tab; fix or drop the row.")
      label = _parse_label(spec, row[col[spec.label_column]], where) if labelled else None
      index = (row[header.index(spec.index_column)].strip()
               if spec.index_column in header else str(row_num))
      examples.append(GlueExample(
          guid=f"{split}-{row_num}", index=index, text_a=row[col[spec.text_a]],
          text_b=row[col[spec.text_b]] if spec.text_b else None, label=label))
      row_num += 1
  if not examples:
    raise GlueDataError(f"{path}: no examples (empty file?).")
  return examples


_TFDS_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
                "dev_mismatched": "validation_mismatched"}


def read_tfds(spec: GlueTaskSpec, split: str, data_dir: str | None = None,
              source: str = "tfds") -> list[GlueExample]:
  """`glue/<task>` (or the `tfds:NAME` of `source`) from TensorFlow Datasets in data_dir
  (data/tfds_sources.py). AX is `glue/ax`, split `test`."""
  name, fields, tfds_split = spec.tfds_name, spec.tfds_fields, _TFDS_SPLITS.get(split, split)
  name = tfds_sources.name_of(source, name)
  if split == "ax":
    name, fields, tfds_split = "glue/ax", ("premise", "hypothesis"), "test"
  if name.split(":")[0] not in (spec.tfds_name, "glue/ax"):
    raise GlueDataError(f"config.glue.source={source!r} is not {spec.dirname}'s TFDS "
                        f"dataset: use tfds:{spec.tfds_name}.")
  examples = []
  for i, ex in enumerate(tfds_sources.examples(name, tfds_split, data_dir or "")):
    text = lambda k: ex[k].decode("utf-8") if isinstance(ex[k], bytes) else str(ex[k])
    raw = ex.get("label", -1)
    if spec.is_regression:
      label = float(raw) if _is_labelled(split) else None
    else:
      label = spec.tfds_labels[int(raw)] if _is_labelled(split) and int(raw) >= 0 else None
    examples.append(GlueExample(
        guid=f"{split}-{i}", index=str(int(ex.get("idx", i))), text_a=text(fields[0]),
        text_b=text(fields[1]) if len(fields) > 1 else None, label=label))
  return examples


def read_split(spec: GlueTaskSpec, split: str, data_dir: str, source: str = "tsv"
               ) -> list[GlueExample]:
  """A task split from `source` 'tsv' (data_dir/<TASK>/<split>.tsv) or 'tfds'."""
  if source == "tsv":
    return read_tsv(spec, split, split_file(spec, split, data_dir))
  if tfds_sources.is_tfds(source):
    try:
      return read_tfds(spec, split, data_dir or None, source)
    except tfds_sources.TfdsError as e:
      raise GlueDataError(str(e)) from None
  raise GlueDataError(f"config.glue.source={source!r}: use 'tsv' or 'tfds:glue/<task>'.")


def label_ids(spec: GlueTaskSpec, examples: Sequence[GlueExample]):
  """Labels as model targets: int index into spec.labels, float for STS-B, -1/nan if none."""
  import numpy as np
  if spec.is_regression:
    return np.array([np.nan if e.label is None else e.label for e in examples], np.float32)
  index = {l: i for i, l in enumerate(spec.labels)}
  return np.array([-1 if e.label is None else index[e.label] for e in examples], np.int32)
