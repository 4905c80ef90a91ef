"""Names a collapsed model: dev predictions that are all one class, all "no answer", or a
constant score.

Such a run still gets a number that looks like a result (MRPC F1 81.2 from predicting
"1" everywhere, SQuAD v2.0 F1 ~50 from answering nothing, any accuracy at the majority
share), so `finetune.run` puts this one-sentence description into its summary line and
into results.json ("degenerate"), and every task's evaluation calls `describe`:
GLUE classification and STS-B regression (tasks/glue.py), SWAG-style multiple choice
(tasks/swag.py) and SQuAD v2.0's no-answer predictions (tasks/squad.py).

Predictions that all agree are not degenerate when the gold labels also all agree (a
one-class dev slice), nor when there are fewer than two of them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

KINDS = ("class", "choice", "regression", "null")

# A regression's predictions are "constant" when their spread (max - min) is at most
# this fraction of the gold labels' spread: STS-B (0-5) -> predictions within 0.005.
# A model whose outputs move less than that carries no ranking information a correlation
# could be measured on; an exactly constant one makes Pearson/Spearman 0 by definition.
REGRESSION_RELATIVE_SPREAD = 1e-3


def describe(preds, split: str, kind: str, labels=None,
             names: Sequence[str] | None = None) -> str | None:
  """One sentence naming a degenerate set of predictions, or None when they are fine.

  Args:
    preds: [N] predictions of one split: class or choice indices ("class", "choice"),
      float scores ("regression"), or booleans True = no answer ("null").
    split: the split's name, used in the sentence ("dev", "dev_matched", ...).
    kind: one of KINDS.
    labels: [N] gold labels in the same encoding (None for unlabelled splits); used for
      context (the class's share of the labels) and to skip one-valued gold sets.
    names: printable name per class index ("class" kind; e.g. MNLI's label strings).

  Returns:
    e.g. "all 408 dev predictions are class 1 (the majority class, 68% of dev labels)",
    "all 1500 dev predictions are 2.701 (spread 0.0004; dev labels span 0 to 5)",
    "all 21 dev predictions are no-answer (38% of dev questions have none)"; None if the
    predictions vary, there are fewer than two, or the gold labels are all one value.
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}: use one of {KINDS}.")
  preds = np.asarray(preds)
  n = len(preds)
  if n < 2:
    return None
  gold = None if labels is None else np.asarray(labels)
  if gold is not None and len(gold) and np.all(gold == gold.flat[0]):
    return None  # a one-valued gold set: agreeing predictions may simply be right
  head = f"all {n} {split} predictions are"
  if kind == "regression":
    p = preds.astype(np.float64)
    spread = float(p.max() - p.min())
    if gold is None:
      if spread > 0:
        return None
      return f"{head} {p[0]:.4g} (constant)"
    g = gold.astype(np.float64)
    if spread > REGRESSION_RELATIVE_SPREAD * float(g.max() - g.min()):
      return None
    return (f"{head} {p.mean():.4g} (spread {spread:.2g}; {split} labels span "
            f"{g.min():.4g} to {g.max():.4g})")
  if kind == "null":
    p = preds.astype(bool)
    if not p.all():
      return None
    share = "" if gold is None else (
        f" ({100 * np.mean(gold.astype(bool)):.0f}% of {split} questions have none)")
    return f"{head} no-answer{share}"
  if not np.all(preds == preds.flat[0]):
    return None
  c = preds.flat[0]
  name = (f"class {names[int(c)]}" if kind == "class" and names is not None
          else f"{'class' if kind == 'class' else 'ending'} {int(c)}")
  if gold is None:
    return f"{head} {name}"
  counts = np.unique(gold, return_counts=True)[1]
  count = int(np.sum(gold == c))
  majority = count == counts.max() and (counts == counts.max()).sum() == 1
  what = ("" if not majority else
          "the majority class, " if kind == "class" else "the most frequent gold ending, ")
  return f"{head} {name} ({what}{100 * count / len(gold):.0f}% of {split} labels)"

