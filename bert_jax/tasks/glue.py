"""GLUE fine-tuning: the nine tasks on the shared loop, official metrics, submission files.

  python -m bert_jax.glue --config=configs/glue.py --config.glue.task=mrpc \
      --config.init_checkpoint=PATH --workdir=runs/mrpc

`--config.glue.task=all` (or a comma list) runs the tasks one after another into
workdir/<task>, with every test prediction in workdir/submission (zip it for the GLUE
server) and a GLUE score table at the end; `--config.finetune.sweep=True` runs the
paper's learning-rate (x seed) grid per task and keeps the best on dev.
`--summarize=DIR` prints the table of finished runs under DIR.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import metrics
from bert_jax import finetune, paths
from bert_jax.data import glue as glue_data
from bert_jax.model import BertConfig, BertForSequenceClassification
from bert_jax.tasks import degenerate, glue_metrics


# Written when every task of a command has finished (the launcher's "done" mark for
# several tasks; one task's is its results.json).
SUMMARY_FILE = "glue_summary.json"


class GlueTask:
  """One GLUE task (finetune.Task): TSV/TFDS examples, classifier or regressor head."""

  def __init__(self, name: str, data_dir: str, source: str = "tsv",
               output_dir: str | None = None):
    self.spec = glue_data.get_task(name)
    self.name = self.spec.name
    self.data_dir = data_dir
    self.source = source
    self.output_dir = output_dir or None
    self.train_split = self.spec.train_split
    self.eval_splits = self.spec.eval_splits
    self.predict_splits = self.spec.predict_splits
    ax_file = glue_data.split_file(self.spec, "ax", data_dir)
    if "ax" in self.predict_splits and source == "tsv" and not paths.is_file(ax_file):
      metrics.log(f"{ax_file} not found (nor the other {glue_data.AX_FILES} under "
                   f"{data_dir}): the AX diagnostic will not be predicted.")
      self.predict_splits = tuple(s for s in self.predict_splits if s != "ax")
    # "score" = mean of the official metrics (GLUE's task score) on the first dev split.
    self.selection_metric = f"{self.eval_splits[0]}/score"

  def missing_files(self) -> list[str]:
    """TSV files this task would read that do not exist."""
    splits = (self.train_split, *self.eval_splits, *self.predict_splits)
    files = [glue_data.split_file(self.spec, s, self.data_dir) for s in splits]
    return [p for p in files if not paths.is_file(p)]

  def load_examples(self, split: str) -> list[glue_data.GlueExample]:
    return glue_data.read_split(self.spec, split, self.data_dir, self.source)

  def featurize(self, examples, tokenizer, max_seq_length: int) -> dict[str, Any]:
    features = finetune.encode_sentence_pairs(
        tokenizer, [e.text_a for e in examples],
        [e.text_b for e in examples] if self.spec.text_b else None, max_seq_length)
    features["labels"] = glue_data.label_ids(self.spec, examples)
    return features

  def make_model(self, bert_config: BertConfig):
    return BertForSequenceClassification(bert_config, num_labels=self.spec.num_labels)

  def example_losses(self, logits, batch) -> dict[str, jax.Array]:
    if self.spec.is_regression:
      err = logits[:, 0] - batch["labels"].astype(jnp.float32)
      return {"loss": jnp.square(err)}
    labels = batch["labels"]
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
            "accuracy": (jnp.argmax(logits, -1) == labels).astype(jnp.float32)}

  def predictions(self, logits: np.ndarray) -> np.ndarray:
    """Float scores (STS-B) or label indices."""
    return logits[:, 0] if self.spec.is_regression else np.argmax(logits, -1)

  def evaluate(self, logits, examples, features, split: str) -> dict[str, float]:
    labels = features["labels"]
    preds = self.predictions(logits)
    out = glue_metrics.compute(self.spec.metrics, labels, preds)
    out["score"] = glue_metrics.task_score(out, self.spec.metrics)
    if self.spec.is_regression:
      out["loss"] = float(np.mean(np.square(logits[:, 0] - labels)))
    else:
      logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
      out["loss"] = float(-np.mean(logp[np.arange(len(labels)), labels]))
    return out

  def degenerate(self, logits, examples, features, split: str, metrics) -> str | None:
    """All dev predictions one class (or a constant STS-B score): one sentence, else None."""
    if self.spec.is_regression:
      return degenerate.describe(self.predictions(logits), split, "regression",
                                 features["labels"])
    return degenerate.describe(self.predictions(logits), split, "class", features["labels"],
                               names=self.spec.labels)

  def format_prediction(self, value) -> str:
    return f"{float(value):.3f}" if self.spec.is_regression else self.spec.labels[int(value)]

  def write_predictions(self, logits, examples, features, split: str,
                        output_dir: str) -> list[str]:
    """Test splits: the GLUE server's file (`index\\tprediction`); dev splits:
    <TASK>-<split>.tsv with the gold label as a third column."""
    if jax.process_index() != 0:
      return []
    preds = self.predictions(logits)
    submission = dict(self.spec.submission)
    if split in submission:
      path = paths.join(output_dir, submission[split])
      lines = ["index\tprediction"] + [
          f"{e.index}\t{self.format_prediction(p)}" for e, p in zip(examples, preds)]
    else:
      path = paths.join(output_dir, f"{self.spec.dirname}-{split}.tsv")
      gold = lambda e: (f"{e.label:.3f}" if self.spec.is_regression else e.label)
      lines = ["index\tprediction\tlabel"] + [
          f"{e.index}\t{self.format_prediction(p)}\t{gold(e)}"
          for e, p in zip(examples, preds)]
    paths.write_text(path, "\n".join(lines) + "\n")  # atomic: never half a submission
    return [path]


def task_names(spec: str) -> list[str]:
  """'all' -> the nine tasks; else a comma list, each checked (unknown -> GlueDataError)."""
  names = list(glue_data.TASK_NAMES) if spec.strip().lower() == "all" else [
      t for t in spec.split(",") if t.strip()]
  if not names:
    raise glue_data.GlueDataError("config.glue.task is empty: name a GLUE task or 'all'.")
  return [glue_data.get_task(n).name for n in names]


def make_task(config, name: str, output_dir: str | None = None) -> GlueTask:
  g = config.glue
  from bert_jax.data import tfds_sources  # TFDS: its own directory, config.data.tfds_data_dir
  data_dir = tfds_sources.data_dir_of(config) if tfds_sources.is_tfds(g.source) else g.data_dir
  return GlueTask(name, data_dir, g.source, output_dir or g.output_dir or None)


def run(config, workdir: str) -> dict[str, Any]:
  """Fine-tunes every task of config.glue.task; returns {task: results} (+ 'glue_score').

  A rerun resumes: finished tasks (and sweep runs) are read from their results.json, an
  interrupted one resumes from its checkpoint. SIGTERM stops the task being trained at
  the next step (checkpointed) and returns {..., 'stopped_early': True}.
  """
  names = task_names(config.glue.task)
  several = len(names) > 1
  submission = config.glue.output_dir or (paths.join(workdir, "submission")
                                          if several else "")
  tasks = {name: make_task(config, name, submission) for name in names}
  if config.glue.source == "tsv":  # every file of every task, before hours of training
    missing = [p for t in tasks.values() for p in t.missing_files()]
    if missing:
      raise glue_data.GlueDataError(
          f"GLUE file(s) not found: {', '.join(missing)}; point config.glue.data_dir at the "
          "folder GLUE's download script wrote, or run only the tasks you have "
          "(--config.glue.task=cola,mrpc,...).")
  results = {}
  with finetune.stop_hook() as should_stop:
    for name, task in tasks.items():
      task_dir = paths.join(workdir, name) if several else workdir
      if config.finetune.sweep:
        results[name] = finetune.sweep(config, task_dir, task,
                                       should_stop=should_stop)["best"]
      else:
        results[name] = finetune.run(config, task_dir, task, should_stop=should_stop)
      if finetune.stopped(results[name]):
        return {**results, "stopped_early": True}
  table, score = summary_table(results)
  collapsed = {n: r["degenerate"] for n, r in results.items() if r.get("degenerate")}
  metrics.log(f"GLUE (dev) over {len(results)} task(s): score {score:.2f}\n{table}" + "".join(
      f"\nDEGENERATE {glue_data.get_task(n).dirname}: {m}" for n, m in collapsed.items()))
  if jax.process_index() == 0:
    paths.write_json(paths.join(workdir, SUMMARY_FILE),
                     {"glue_score": score, "table": table,
                      "tasks": {n: r["best"] for n, r in results.items()},
                      "degenerate": collapsed})
  return {**results, "glue_score": score}


def task_dev_score(name: str, best: dict[str, float]) -> float:
  """GLUE task score from a run's best dev record: mean of the official metrics over
  the dev splits (MNLI: mean of matched and mismatched accuracy)."""
  spec = glue_data.get_task(name)
  return float(np.mean([best[f"{s}/{m}"] for s in spec.eval_splits for m in spec.metrics]))


def summary_table(results: dict[str, dict]) -> tuple[str, float]:
  """(table of every task's official dev metrics x100, GLUE score over these tasks)."""
  rows, scores = [], {}
  for name, r in results.items():
    spec = glue_data.get_task(name)
    best = r["best"]
    scores[name] = 100 * task_dev_score(name, best)
    label = lambda s, m: m if s == "dev" else f"{s.replace('dev_', '')}/{m}"
    shown = ", ".join(f"{label(s, m)} {100 * best[f'{s}/{m}']:.2f}"
                      for s in spec.eval_splits for m in spec.metrics)
    rows.append([spec.dirname, shown, f"{scores[name]:.2f}",
                 f"{r.get('learning_rate', float('nan')):g}", r.get("seed", "")])
  score = glue_metrics.glue_score(scores)
  rows.append(["GLUE score", "", f"{score:.2f}", "", ""])
  return metrics.format_table(["task", "dev metrics", "score", "lr", "seed"], rows), score


def summarize(directories: Sequence[str]) -> tuple[str, float]:
  """Table over finished runs: every results.json under the directories, best per task."""
  best: dict[str, dict] = {}
  for d in directories:
    # Runs lie at depth 0-2 (task dir, sweep run, a task's sweep run); gs:// has no "**".
    found = [f for lv in ("", "*", "*/*", "*/*/*")
             for f in paths.glob(paths.join(d, lv, finetune.RESULTS_FILE))]
    for path in sorted(found):
      r = paths.read_json(path)
      if r["task"] not in best or r["score"] > best[r["task"]]["score"]:
        best[r["task"]] = r
  if not best:
    raise glue_data.GlueDataError(f"no results.json under {list(directories)}.")
  return summary_table(dict(sorted(best.items(), key=lambda kv: glue_data.TASK_NAMES.index(kv[0]))))


def summarize_text(directories: Sequence[str]) -> str:
  """The `--summarize` output: GLUE score and table over finished runs."""
  table, score = summarize(directories)
  return f"GLUE score {score:.2f}\n{table}"
