"""Predict with an exported model on raw text: TSV, JSON / JSON lines, or plain text.

  python -m bert_jax.tools.predict --model_dir=exported/mrpc --input_file=pairs.tsv \
      --output_file=predictions.jsonl

Reads sentences (or sentence pairs), tokenizes them with the export's vocabulary exactly
as fine-tuning did, runs the exported StableHLO (bert_jax.tools.export) in fixed-size batches
(one compilation), and writes one JSON line per example: a classifier gives
{"id", "label", "probabilities": {label: p}}, a regressor (STS-B) {"id", "score"}.

Inputs: .tsv with a header row (the text columns default to the task's, e.g.
"#1 String"/"#2 String" for MRPC; --text_a/--text_b name others); .json (a list of
objects) or .jsonl (keys text_a/text_b or the same column names); anything else is plain
text, one example per line, a pair written "first ||| second" (as the original
extract_features). An "id"/"index" column or key is copied to the output.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from typing import Sequence

import jax
import numpy as np

from bert_jax.tools import export as export_lib
from bert_jax import paths
from bert_jax import preflight

PAIR_SEPARATOR = " ||| "
ID_KEYS = ("id", "index", "guid", "idx")


class PredictError(ValueError):
  """Bad input for prediction; the message names the file, line and the fix."""


def read_examples(path: str, text_a: str = "", text_b: str = "",
                  task_columns: Sequence[str] = (), allow_mixed: bool = False
                  ) -> tuple[list[str], list[str], list[str] | None]:
  """(ids, texts_a, texts_b or None) from a .tsv/.json/.jsonl/text file.

  Text columns: text_a/text_b if given, else the task's (e.g. MRPC's "#1 String",
  "#2 String") when the file has them, else text_a/text_b, sentence1/sentence2, ...
  Plain text with allow_mixed may mix pairs and single sentences (None in texts_b).
  """
  if not paths.is_file(path):
    raise PredictError(f"--input_file={path}: no such file.")
  ext = paths.as_path(path).suffix.lower()
  if ext in (".tsv", ".json", ".jsonl"):
    rows = _read_rows(path, ext)
    return _columns(rows, path, text_a, text_b, task_columns)
  ids, a, b = [], [], []
  with _open_text(path) as f:
    for line in f:
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      first, sep, second = line.partition(PAIR_SEPARATOR)
      ids.append(str(len(ids)))
      a.append(first)
      b.append(second if sep else None)
  if allow_mixed:
    return ids, a, (None if all(x is None for x in b) else b)
  return ids, a, _pairs_or_none(b, path)


def _open_text(path: str):
  """A text file (local or gs://) as UTF-8 (a BOM dropped), lines as the file has them."""
  return io.TextIOWrapper(io.BytesIO(paths.read_bytes(path)), encoding="utf-8-sig",
                          newline=None)


def _read_rows(path: str, ext: str) -> list[tuple[int, dict]]:
  """[(line number, row dict)]."""
  with _open_text(path) as f:
    if ext == ".tsv":
      reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      return [(i + 2, row) for i, row in enumerate(reader)]
    if ext == ".json":
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise PredictError(f"{path}: not valid JSON ({e}); JSON lines go in a .jsonl file.")
      if not isinstance(data, list):
        raise PredictError(f"{path}: expected a list of objects with text fields.")
      return [(i + 1, row) for i, row in enumerate(data)]
    rows = []
    for i, line in enumerate(f):
      if line.strip():
        try:
          rows.append((i + 1, json.loads(line)))
        except json.JSONDecodeError as e:
          raise PredictError(f"{path}:{i + 1}: not a JSON object ({e}).") from e
    return rows


def _columns(rows, path: str, text_a: str, text_b: str, task_columns: Sequence[str]):
  if not rows:
    raise PredictError(f"{path}: no examples.")
  keys = list(rows[0][1])
  if not text_a and task_columns and task_columns[0] in keys:
    text_a = task_columns[0]
    text_b = text_b or (task_columns[1] if len(task_columns) > 1 else "")
  a_key = text_a or next((k for k in ("text_a", "sentence1", "sentence", "text")
                          if k in keys), "")
  b_key = text_b or (next((k for k in ("text_b", "sentence2") if k in keys), "")
                     if not text_a else "")
  if a_key not in keys:
    raise PredictError(f"{path}: no text column {a_key or 'text_a'!r} (columns: {keys}); "
                       "name it with --text_a=COLUMN (and --text_b=COLUMN for pairs).")
  if b_key and b_key not in keys:
    raise PredictError(f"{path}: no column {b_key!r} for --text_b (columns: {keys}).")
  id_key = next((k for k in ID_KEYS if k in keys), None)
  ids, a, b = [], [], []
  for line, row in rows:
    if not isinstance(row, dict) or row.get(a_key) is None:
      raise PredictError(f"{path}:{line}: missing {a_key!r}.")
    ids.append(str(row[id_key]) if id_key else str(len(ids)))
    a.append(str(row[a_key]))
    if b_key:
      if row.get(b_key) is None:
        raise PredictError(f"{path}:{line}: missing {b_key!r}.")
      b.append(str(row[b_key]))
  return ids, a, (b if b_key else None)


def _pairs_or_none(b: list, path: str):
  if all(x is None for x in b):
    return None
  if any(x is None for x in b):
    missing = next(i for i, x in enumerate(b) if x is None)
    raise PredictError(f"{path}: example {missing + 1} has no '{PAIR_SEPARATOR.strip()}' "
                       "second sentence while others do: give every line a pair or none.")
  return b


def predict(predictor: export_lib.Predictor, texts_a: Sequence[str],
            texts_b: Sequence[str] | None, batch_size: int = 32) -> dict[str, np.ndarray]:
  """Model outputs for every example: batches of a fixed size (the last one padded)."""
  features = predictor.encode(texts_a, texts_b)
  n = len(texts_a)
  chunks = []
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in features.items()}
    m = len(batch["input_ids"])
    if m < batch_size:  # pad to the one compiled shape; padded rows are dropped below.
      batch = {k: np.concatenate([v, np.zeros((batch_size - m, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    out = predictor(**batch)
    chunks.append({k: v[:m] for k, v in out.items()})
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def check_memory(predictor: export_lib.Predictor, batch_size: int) -> None:
  """Compiles the model for `batch_size` before predicting; preflight.DoesNotFitError (one
  line: what it needs, what there is, a --batch_size that fits) if it cannot fit."""
  params = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(predictor.params))
  dims = tuple(predictor.spec.input_shape)
  hints = preflight.MemoryHints(
      what="prediction", batch_size=batch_size, batch_flag="--batch_size",
      shape=(f"{dims[0]} choices x " if len(dims) == 2 else "") + f"seq {dims[-1]}",
      fixed_bytes=params)
  devices = jax.local_devices()[:1]
  predictor.compile(batch_size, lambda lowered: preflight.compile_checked(
      lowered, devices, hints, allocated_bytes=params))


def records(spec: export_lib.ServingSpec, ids: Sequence[str], outputs: dict[str, np.ndarray]
            ) -> list[dict]:
  """One JSON-ready dict per example: label + probabilities, or score."""
  if spec.head == "regression":
    return [{"id": i, "score": float(s)} for i, s in zip(ids, outputs["score"])]
  labels = spec.labels
  out = []
  for i, probs in zip(ids, outputs["probabilities"]):
    out.append({"id": i, "label": labels[int(np.argmax(probs))],
                "probabilities": {l: float(p) for l, p in zip(labels, probs)}})
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m bert_jax.tools.predict", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True, help="written by python -m bert_jax.tools.export")
  p.add_argument("--input_file", required=True)
  p.add_argument("--output_file", required=True, help="JSON lines")
  p.add_argument("--text_a", default="", help="column/key of the first sentence")
  p.add_argument("--text_b", default="", help="column/key of the second sentence")
  p.add_argument("--batch_size", type=int, default=32)
  args = p.parse_args(argv)
  try:
    predictor = export_lib.load(args.model_dir)
    spec = predictor.spec
    if spec.head not in ("classification", "regression"):
      raise PredictError(
          f"{args.model_dir} is a {spec.head} model: predict reads sentence (pair) "
          "classifiers and regressors; use bert_jax.tools.extract_features for features and "
          "the squad/swag task modules for span and multiple-choice predictions.")
    ids, a, b = read_examples(args.input_file, args.text_a, args.text_b, spec.text_columns)
    check_memory(predictor, args.batch_size)
    t0 = time.time()
    outputs = predict(predictor, a, b, args.batch_size)
    rows = records(spec, ids, outputs)
  except (PredictError, export_lib.ExportError, preflight.DoesNotFitError) as e:
    print(f"bert_jax.tools.predict: error: {e}", file=sys.stderr)
    return 2
  paths.write_text(args.output_file, "".join(json.dumps(row) + "\n" for row in rows))
  rate = len(rows) / max(time.time() - t0, 1e-9)
  summary = ""
  if spec.head == "classification":
    counts = {l: sum(r["label"] == l for r in rows) for l in spec.labels}
    summary = " labels " + ", ".join(f"{l}: {c}" for l, c in counts.items())
  print(f"{len(rows)} predictions ({'pairs' if b else 'single sentences'}) -> "
        f"{args.output_file} at {rate:.1f} examples/s;{summary}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
