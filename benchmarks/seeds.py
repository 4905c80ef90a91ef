"""Statistics over repeated fine-tuning runs (seeds) for the learning studies:
mean and standard error, and implementations compared seed by seed."""
from __future__ import annotations

import math


def mean_se(xs: list[float]) -> tuple[float, float]:
  """Mean and standard error of the mean (NaN for a single value)."""
  m = sum(xs) / len(xs)
  if len(xs) < 2:
    return m, float("nan")
  return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def summarize(runs: list[dict], n_dev: int) -> dict:
  """Per implementation: final / best dev accuracy per seed, mean ± SE over seeds, the
  binomial SE of one run's accuracy on n_dev questions; ours - HF paired by seed."""
  out = {}
  for impl in sorted({r["impl"] for r in runs}):
    rs = sorted((r for r in runs if r["impl"] == impl), key=lambda r: r["seed"])
    final = [r["dev_accuracy_per_epoch"][-1] for r in rs]
    best = [r["best_dev_accuracy"] for r in rs]
    m, se = mean_se(final)
    out[impl] = {"seeds": [r["seed"] for r in rs], "final": final, "best": best,
                 "final_mean": m, "final_se_over_seeds": se,
                 "best_mean": mean_se(best)[0], "best_se_over_seeds": mean_se(best)[1],
                 "one_run_binomial_se": (m * (1 - m) / n_dev) ** 0.5,
                 "train_seconds": [r["train_seconds"] for r in rs]}
  ours = [k for k in out if k.startswith("bert_jax")]
  hf = [k for k in out if not k.startswith("bert_jax")]
  if ours and hf:
    a, b = out[ours[0]], out[hf[0]]
    common = sorted(set(a["seeds"]) & set(b["seeds"]))
    d = [a["final"][a["seeds"].index(s)] - b["final"][b["seeds"].index(s)] for s in common]
    m, se = mean_se(d)
    out["difference_final"] = {"of": f"{ours[0]} - {hf[0]}", "seeds": common, "per_seed": d,
                               "mean": m, "se_over_seeds": se}
  return out
