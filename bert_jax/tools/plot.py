"""Curves of a run: `python -m bert_jax.tools.plot --workdir=runs/tiny` -> runs/tiny/curves.png.

Reads the workdir's metrics.jsonl (one JSON record per log or eval: {"step": s,
"train/loss": ..., "eval/mlm_accuracy": ...}) and draws one panel per metric, train and
eval on the same axes. Works for pre-training and fine-tuning workdirs alike.
"""
from __future__ import annotations

import collections
import json
import io
import math

from absl import app, flags

from bert_jax import paths

DEFAULT_METRICS = ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy",
                   "learning_rate", "grad_norm", "seq_per_s")


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.")
  flags.DEFINE_string("out", "", "PNG path (default WORKDIR/curves.png).")
  flags.DEFINE_list("metrics", list(DEFAULT_METRICS),
                    "Metric names to draw (without the train/ eval/ prefix); missing ones "
                    "are skipped.")


def read_metrics(path: str) -> dict[str, list[tuple[int, float]]]:
  """metrics.jsonl -> {key: [(step, value), ...]} for every numeric key."""
  series = collections.defaultdict(list)
  with paths.open(path, "r") as f:
    for i, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i}: not a JSON line ({e}); is this a metrics.jsonl?")
      step = record.get("step")
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          series[k].append((int(step), float(v)))
  return dict(series)


def plot(series: dict[str, list[tuple[int, float]]], metrics, out: str, title: str = "") -> str:
  """Draws one panel per metric name that has data (train and eval lines); returns out."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  def split_key(key):
    return key.split("/", 1) if "/" in key else ("", key)

  panels = [m for m in metrics if any(split_key(k)[1] == m for k in series)]
  if not panels:
    raise ValueError(f"none of the metrics {list(metrics)} is in the log; it has "
                     f"{sorted(series)}.")
  cols = min(3, len(panels))
  rows = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
  for ax, name in zip(axes.flat, panels):
    for key in sorted(k for k in series if split_key(k)[1] == name):
      steps, values = zip(*series[key])
      split = split_key(key)[0] or "train"
      ax.plot(steps, values, marker="o" if split == "eval" else None, markersize=3,
              label=split)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  buf = io.BytesIO()  # PNG bytes, then one write through paths (local or gs://)
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  paths.write_bytes(out, buf.getvalue())
  return out


def main(argv):
  del argv
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise app.UsageError("--workdir is required: python -m bert_jax.tools.plot --workdir=runs/tiny")
  path = paths.join(workdir, "metrics.jsonl")
  if not paths.is_file(path):
    raise app.UsageError(f"{path} does not exist: point --workdir at a bert_jax run.")
  out = plot(read_metrics(path), flags.FLAGS.metrics,
             flags.FLAGS.out or paths.join(workdir, "curves.png"),
             title=paths.as_path(workdir).name)
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
