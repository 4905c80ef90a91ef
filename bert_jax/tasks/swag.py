"""SWAG-style multiple choice (SWAG, CommonsenseQA, ...): the task for finetune.run.

python -m bert_jax.swag --config=configs/swag.py --workdir=DIR \
    --config.init_checkpoint=PATH --config.swag.train_file=train.csv ...

Each example is num_choices sequences [CLS] context [SEP] start ending_i [SEP]
(data/multiple_choice.py); BertForMultipleChoice gives one score per choice from the
pooled output and a single vector; the loss is the cross-entropy of the softmax over the
choices. Metric: accuracy. Predictions: a CSV per split, `id,pred,label,ending0..N-1`:
the chosen ending's index and the probability of every ending (HellaSwag's leaderboard
takes the per-ending probabilities; the argmax is SWAG's answer).
"""
from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import finetune, paths
from bert_jax.config import ConfigError
from bert_jax.data import multiple_choice as mc
from bert_jax.model import BertConfig, BertForMultipleChoice
from bert_jax.tasks import degenerate

DATASETS = ("swag", "commonsense_qa")


def choice_losses(scores: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Per-example cross-entropy of softmax(scores [B, C]) at labels [B], and correctness.

  Unlabelled rows (label -1) get loss 0; callers weight rows anyway.
  """
  scores = scores.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(scores, axis=-1)
  safe = jnp.maximum(labels, 0).astype(jnp.int32)
  nll = -jnp.take_along_axis(log_probs, safe[:, None], axis=-1)[:, 0]
  labelled = labels >= 0
  correct = (jnp.argmax(scores, axis=-1) == labels) & labelled
  return {"loss": jnp.where(labelled, nll, 0.0), "accuracy": correct.astype(jnp.float32)}


def _parse_slice(text: str, key: str) -> slice:
  if not text:
    return slice(None)
  try:
    parts = [int(p) if p.strip() else None for p in text.split(":")]
  except ValueError:
    parts = []
  if len(parts) not in (2, 3):
    raise ConfigError(f"{key}={text!r}: use a Python slice such as ':1000' or '1000:'.")
  return slice(*parts)


@dataclasses.dataclass
class MultipleChoiceTask:
  """SWAG / CommonsenseQA for `finetune.run` (see finetune.Task).

  Args (from config.swag): dataset, format, train/dev/test file, train/dev slice,
  num_choices.
  """
  dataset: str = "swag"
  train_file: str = ""
  dev_file: str = ""
  test_file: str = ""
  num_choices: int = 4
  format: str = ""
  train_slice: str = ""
  dev_slice: str = ""
  selection_metric: str = "dev/accuracy"
  train_split: str = "train"
  eval_splits: Sequence[str] = ("dev",)
  output_dir: str | None = None
  tfds_data_dir: str = ""  # config.data.tfds_data_dir, for tfds:NAME files

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ConfigError(f"config.swag.dataset={self.dataset!r}: use one of {DATASETS}.")
    if self.num_choices < 2:
      raise ConfigError(f"config.swag.num_choices={self.num_choices}: need at least 2.")
    for key in ("train_file", "dev_file"):
      if not getattr(self, key):
        raise ConfigError(
            f"config.swag.{key} is empty: point it at the {self.dataset} "
            f"{'train.csv' if key == 'train_file' else 'val.csv'} (or JSON lines).")
    if self.format and self.format not in mc.FORMATS:
      raise ConfigError(f"config.swag.format={self.format!r}: use one of {mc.FORMATS}.")

  @classmethod
  def from_config(cls, config) -> "MultipleChoiceTask":
    s = config.swag
    return cls(dataset=s.dataset, train_file=s.train_file, dev_file=s.dev_file,
               test_file=s.test_file, num_choices=int(s.num_choices), format=s.format,
               train_slice=s.train_slice, dev_slice=s.dev_slice,
               tfds_data_dir=str(config.data.get("tfds_data_dir", "") or ""))

  @property
  def name(self) -> str:
    return self.dataset

  @property
  def predict_splits(self) -> tuple[str, ...]:
    return ("test",) if self.test_file else ()

  def load_examples(self, split: str) -> list[mc.MultipleChoiceExample]:
    path = {"train": self.train_file, "dev": self.dev_file, "test": self.test_file}[split]
    fmt = self.format or mc.infer_format(path, self.dataset)
    if path.startswith("tfds:") and "#" not in path:  # the split from the file's role
      path += "#" + {"train": "train", "dev": "validation"}.get(split, split)
    examples = mc.read_examples(path, fmt, self.num_choices, require_labels=split != "test",
                                tfds_data_dir=self.tfds_data_dir)
    cut = {"train": ("config.swag.train_slice", self.train_slice),
           "dev": ("config.swag.dev_slice", self.dev_slice)}.get(split)
    if cut and cut[1]:
      examples = examples[_parse_slice(cut[1], cut[0])]
      if not examples:
        raise ConfigError(f"{cut[0]}={cut[1]!r} selects no examples of {path}.")
    return examples

  def featurize(self, examples, tokenizer, max_seq_length: int) -> dict[str, Any]:
    return mc.convert_examples_to_features(examples, tokenizer, max_seq_length)

  def make_model(self, bert_config: BertConfig) -> BertForMultipleChoice:
    return BertForMultipleChoice(bert_config)

  def example_losses(self, outputs, batch) -> dict[str, jax.Array]:
    return choice_losses(outputs, batch["labels"])

  def evaluate(self, outputs, examples, features, split: str) -> dict[str, float]:
    return evaluate_scores(np.asarray(outputs), np.asarray(features["labels"]))

  def degenerate(self, outputs, examples, features, split: str, metrics) -> str | None:
    """Every labelled dev row picks the same ending: one sentence, else None."""
    labels = np.asarray(features["labels"])
    keep = labels >= 0
    return degenerate.describe(np.asarray(outputs)[keep].argmax(-1), split, "choice",
                               labels[keep])

  def write_predictions(self, outputs, examples, features, split: str,
                        output_dir: str) -> list[str]:
    path = paths.join(output_dir, f"{split}_predictions.csv")
    write_predictions(path, examples, np.asarray(outputs))
    return [path]


def evaluate_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """accuracy and mean cross-entropy over the labelled rows of scores [N, C]."""
  keep = labels >= 0
  if not keep.any():
    return {}
  s = scores[keep].astype(np.float64)
  y = labels[keep]
  log_probs = s - s.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  return {"accuracy": float((s.argmax(-1) == y).mean()),
          "loss": float(-log_probs[np.arange(len(y)), y].mean())}


def write_predictions(path: str, examples: Sequence[mc.MultipleChoiceExample],
                      scores: np.ndarray) -> None:
  """CSV: id, pred (index of the chosen ending), label ('' if none), ending0..N-1 probs."""
  if jax.process_index() != 0:
    return
  z = np.asarray(scores, np.float64)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  n = scores.shape[1]
  f = io.StringIO()
  w = csv.writer(f, lineterminator="\n")
  w.writerow(["id", "pred", "label", *(f"ending{i}" for i in range(n))])
  for e, p in zip(examples, probs):
    w.writerow([e.example_id, int(p.argmax()), "" if e.label is None else e.label,
                *(f"{x:.6f}" for x in p)])
  paths.write_text(path, f.getvalue())  # atomic: never half a predictions file


def read_predictions(path: str) -> list[dict[str, Any]]:
  """The rows of a predictions CSV: {'id', 'pred', 'label', 'probs'}."""
  rows = list(csv.DictReader(io.StringIO(paths.read_text(path), newline="")))
  return [{"id": r["id"], "pred": int(r["pred"]),
           "label": int(r["label"]) if r["label"] else None,
           "probs": [float(v) for k, v in r.items() if k.startswith("ending")]}
          for r in rows]


def run(config, workdir: str) -> dict[str, Any]:
  """Fine-tunes on config.swag's files (one run per lr/seed when config.finetune.sweep);
  `python -m bert_jax.main` calls this for config.task == "swag"."""
  task = MultipleChoiceTask.from_config(config)
  if task.test_file:  # finetune.run reads it after training: fail on a bad row now.
    task.load_examples("test")
  if config.finetune.sweep:
    return finetune.sweep(config, workdir, task)["best"]
  return finetune.run(config, workdir, task)
