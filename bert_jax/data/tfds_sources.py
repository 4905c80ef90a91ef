"""TensorFlow Datasets by name: the one place bert_jax reads TFDS.

A data source spelled `tfds:NAME` (TFDS's own name: `glue/mrpc`, `squad/v2.0`,
`wikipedia/20230601.en`, optionally `:VERSION`) is read here, from the TFDS data
directory `config.data.tfds_data_dir` ("" = TFDS's default: $TFDS_DATA_DIR, else
~/tensorflow_datasets; local or gs://):

- GLUE: `--config.glue.source=tfds:glue/mrpc` (data/glue.py turns the rows into examples);
- SQuAD: `--config.squad.train_file=tfds:squad/v2.0` (split train; dev_file: validation),
  turned into the official JSON structure (`squad_json`);
- multiple choice: `tfds:hellaswag` (TFDS has no SWAG builder: SWAG is read from its CSV);
- pre-training text: `create_pretraining_data --input_file=tfds:wikipedia/20230601.en`
  (`corpus_files` writes the BERT text format: one sentence per line, a blank line
  between documents).

A dataset that is already prepared is read from its files without the builder's code
(`read_only_builder`: no TensorFlow, no network); only one that is not prepared yet is
built with `download_and_prepare` (which needs the network TFDS downloads from). Array-
record datasets are read without TensorFlow; TFRecord ones through `tf.data`.
"""
from __future__ import annotations

import collections
import hashlib
import os
import re
from typing import Any, Iterator

import numpy as np

from bert_jax import paths

PREFIX = "tfds:"
# Our split names -> TFDS's.
SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
          "dev_mismatched": "validation_mismatched"}


class TfdsError(ValueError):
  """A TFDS source cannot be read; the message names the dataset, the directory and the fix."""


def is_tfds(spec: str) -> bool:
  """True for `tfds`, `tfds:NAME` (a TFDS source rather than a file)."""
  return spec == "tfds" or str(spec).startswith(PREFIX)


def name_of(spec: str, default: str = "") -> str:
  """`tfds:glue/mrpc` -> `glue/mrpc`; `tfds` (or `tfds:` + a split) -> `default`."""
  rest = spec[len(PREFIX):] if spec.startswith(PREFIX) else ""
  if not rest or "/" not in rest and rest.split("[")[0] in _SPLIT_WORDS and default:
    return default
  return rest


_SPLIT_WORDS = ("train", "validation", "test", "dev")


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise TfdsError(f"a tfds: source needs tensorflow-datasets ({e}): pip install "
                    "tensorflow-datasets, or read the dataset's own files (for GLUE: "
                    "source='tsv' with config.glue.data_dir).") from None
  return tfds


def builder(name: str, data_dir: str = ""):
  """The TFDS builder of `name` in `data_dir`: from its prepared files when there, else
  from its code (prepared now with download_and_prepare)."""
  tfds = _tfds()
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top
  # $TFDS_DATA_DIR as set now (TFDS reads it once, at import).
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
  try:
    return read_only_builder.builder_from_files(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except  (not prepared yet)
    prepared_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = data_dir or "TFDS's default data directory ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
      b = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except  (an unknown name)
      raise TfdsError(
          f"tfds:{name}: not prepared in {where} and not a dataset TFDS knows "
          f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
          "check the name (tfds.list_builders()), or set config.data.tfds_data_dir to the "
          "directory where it was prepared.") from None
    try:
      b.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (no network, ...)
      raise TfdsError(
          f"tfds:{name}: not prepared in {where} ({prepared_error}) and preparing it failed "
          f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
          f"run `tfds build {name} --data_dir=DIR` where there is "
          "a network, then point config.data.tfds_data_dir at DIR.") from None
    return b


def _decode(value: Any) -> Any:
  """TFDS numpy values -> Python: bytes -> str, arrays -> lists, numpy scalars -> numbers."""
  if isinstance(value, dict):
    return {k: _decode(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [_decode(v) for v in value.tolist()] if value.ndim else _decode(value.item())
  if isinstance(value, (list, tuple)):
    return [_decode(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def examples(name: str, split: str, data_dir: str = "") -> Iterator[dict[str, Any]]:
  """The rows of a TFDS split (our split names accepted: dev -> validation), decoded to
  Python values, in the dataset's stored order."""
  b = builder(name, data_dir)
  split = SPLITS.get(split, split)
  if split not in b.info.splits:
    raise TfdsError(f"tfds:{name} has no split {split!r} (splits: "
                    f"{', '.join(sorted(b.info.splits))}).")
  if str(getattr(b.info.file_format, "value", b.info.file_format)) == "array_record":
    source = b.as_data_source(split=split)  # random access, no TensorFlow
    for i in range(len(source)):
      yield _decode(source[i])
    return
  tfds = _tfds()
  for row in tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)):
    yield _decode(row)


# ---------------------------------------------------------------------------------------
# SQuAD: TFDS rows -> the official JSON structure
# ---------------------------------------------------------------------------------------

def squad_source(spec: str, version: str, role_split: str) -> tuple[str, str]:
  """(TFDS name, split) of a SQuAD file setting: `tfds:squad/v2.0` (split from the file's
  role: train_file -> train, dev_file/predict_file -> validation) or the older
  `tfds:train` / `tfds:validation` (name from config.squad.version)."""
  rest = spec[len(PREFIX):]
  if "/" in rest:
    name, _, split = rest.partition("#")
    return name, split or role_split
  return f"squad/v{version}", SPLITS.get(rest, rest) or role_split


def squad_json(name: str, split: str, data_dir: str = "") -> dict[str, Any]:
  """TFDS squad/v1.1 or squad/v2.0 split -> the official JSON structure (articles ->
  paragraphs -> qas), questions grouped under their (title, context) in stored order."""
  paragraphs: dict[tuple[str, str], dict] = collections.OrderedDict()
  v2 = name.split(":")[0].endswith("2.0")
  for r in examples(name, split, data_dir):
    key = (r.get("title", ""), r["context"])
    p = paragraphs.setdefault(key, {"context": key[1], "qas": []})
    answers = [{"text": t, "answer_start": int(a)}
               for t, a in zip(r["answers"]["text"], r["answers"]["answer_start"])]
    # TFDS v2.0 marks unanswerable questions by is_impossible (older: no answers).
    impossible = bool(r["is_impossible"]) if "is_impossible" in r else (v2 and not answers)
    qa = {"id": r["id"], "question": r["question"], "answers": answers,
          "is_impossible": impossible}
    if impossible and r.get("plausible_answers"):
      qa["plausible_answers"] = [{"text": t, "answer_start": int(a)} for t, a in zip(
          r["plausible_answers"]["text"], r["plausible_answers"]["answer_start"])]
    p["qas"].append(qa)
  articles: dict[str, list] = collections.OrderedDict()
  for (title, _), p in paragraphs.items():
    articles.setdefault(title, []).append(p)
  return {"version": name.split("/")[-1].split(":")[0],
          "data": [{"title": t, "paragraphs": ps} for t, ps in articles.items()]}


# ---------------------------------------------------------------------------------------
# Multiple choice (HellaSwag's layout: context, endings, label)
# ---------------------------------------------------------------------------------------

def multiple_choice_rows(spec: str, split: str, data_dir: str = "") -> list[dict[str, Any]]:
  """`tfds:hellaswag` rows as {id, context, endings, label} (label None when the split
  has none). TFDS has no SWAG builder: `tfds:swag` is refused, naming the CSV route."""
  name = name_of(spec)
  if name.split("/")[0].split(":")[0] == "swag":
    raise TfdsError("tfds:swag: TensorFlow Datasets has no SWAG builder; read SWAG from its "
                    "official CSV files (config.swag.train_file=PATH/train.csv), or use "
                    "tfds:hellaswag for HellaSwag.")
  rows = []
  for i, r in enumerate(examples(name, split, data_dir)):
    context = r.get("context", r.get("ctx"))
    if context is None or "endings" not in r:
      raise TfdsError(f"tfds:{name}: rows have {sorted(r)}, not context + endings (+ label) "
                      "as HellaSwag; multiple choice reads that layout.")
    label = r.get("label", -1)
    rows.append({"id": r.get("source_id") or str(i), "context": context,
                 "endings": list(r["endings"]),
                 "label": None if label is None or int(label) < 0 else int(label)})
  return rows


# ---------------------------------------------------------------------------------------
# Pre-training corpora: a TFDS text dataset -> BERT-format text files
# ---------------------------------------------------------------------------------------

# A sentence ends at . ! ? (closing quotes/brackets kept) followed by space and a capital,
# digit or opening quote: enough to give NSP pairs of sentence-sized segments.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
  """A document's text -> sentences (each paragraph line split at sentence ends)."""
  out = []
  for line in text.splitlines():
    line = line.strip()
    if line:
      out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
  return out


def corpus_files(spec: str, output_dir: str, data_dir: str = "", split: str = "train",
                 text_key: str = "text", docs_per_file: int = 10_000) -> list[str]:
  """Writes the documents of a TFDS text dataset (`tfds:wikipedia/20230601.en`, its
  `text` feature) as BERT pre-training text under output_dir (one sentence per line, a
  blank line between documents, `docs_per_file` documents per file); returns the files."""
  name = name_of(spec)
  files, lines, n_docs = [], [], 0

  def flush():
    if lines:
      path = paths.join(output_dir, f"{len(files):05d}.txt")
      paths.write_text(path, "\n".join(lines) + "\n")
      files.append(path)
      lines.clear()

  for row in examples(name, split, data_dir):
    if text_key not in row:
      raise TfdsError(f"tfds:{name} rows have no {text_key!r} feature ({sorted(row)}): "
                      "a pre-training corpus is a text dataset (e.g. wikipedia/...).")
    sents = sentences(str(row[text_key]))
    if not sents:
      continue
    lines.extend(sents + [""])
    n_docs += 1
    if n_docs % docs_per_file == 0:
      flush()
  flush()
  if not files:
    raise TfdsError(f"tfds:{name} split {split}: no documents with text.")
  return files


def expand_corpus(input_file: str, data_dir: str = "", cache_root: str = "") -> str:
  """`--input_file` with each `tfds:NAME` item replaced by the text files `corpus_files`
  writes for it (under cache_root, default the bert_jax cache, reused when complete)."""
  items = [p.strip() for p in input_file.split(",") if p.strip()]
  out = []
  for item in items:
    if not is_tfds(item):
      out.append(item)
      continue
    if not cache_root:
      cache_root = paths.cache_dir()
    key = hashlib.sha256(f"{item}|{data_dir}".encode()).hexdigest()[:12]
    target = paths.join(cache_root, "tfds_corpora", f"{name_of(item).replace('/', '_')}-{key}")
    done = paths.join(target, "DONE")
    if paths.is_file(done):
      out.extend(paths.read_text(done).split())
      continue
    files = corpus_files(item, target, data_dir)
    paths.write_text(done, "\n".join(files) + "\n")
    out.extend(files)
  return ",".join(out)


def data_dir_of(config) -> str:
  """config.data.tfds_data_dir ("" = TFDS's default)."""
  return str(config.data.get("tfds_data_dir", "") or "")
