"""Bad numbers: which steps went non-finite, and what `config.train.nan_policy` does then.

The jitted step (train_lib.make_train_step) already refuses a non-finite update: when the
loss or the global gradient norm is NaN or Inf, params and optimizer state stay as they
were and `state.skipped_steps` counts the step. Metrics leave the device only every
`train.log_every` steps (so the host never stalls the device), and this module reads
those fetched metrics, names the exact bad steps, and applies the policy:

- "skip": report the steps (stdout) and keep training; the count is in the metrics;
- "stop": wait until pending checkpoint writes are complete, then raise NonFiniteError
  naming the first bad step and the last good checkpoint, which the same command resumes
  from (the bad update was never applied, so every checkpoint on disk is good).
"""
from __future__ import annotations

from typing import Sequence


class NonFiniteError(FloatingPointError):
  """Training hit a NaN/Inf loss or gradient under nan_policy='stop'."""


def bad_steps(host_metrics: Sequence[dict], first_step: int, skipped_before: int) -> list[int]:
  """Steps whose update was skipped, from per-step metrics with a cumulative skipped_steps.

  Args:
    host_metrics: fetched metrics of consecutive steps, each with 'skipped_steps'.
    first_step: the step number of host_metrics[0].
    skipped_before: skipped_steps before host_metrics[0].
  """
  out, prev = [], int(skipped_before)
  for i, m in enumerate(host_metrics):
    now = int(m["skipped_steps"])
    if now > prev:
      out.append(first_step + i)
    prev = now
  return out


def last_good_checkpoint(checkpointer) -> str:
  """'step N in DIR' for the newest complete checkpoint, after pending writes finish."""
  checkpointer.wait()
  step = checkpointer.latest_step()
  if step is None:
    return f"none in {checkpointer.directory} yet (a rerun starts from the beginning)"
  return f"step {step} in {checkpointer.directory}"


def apply_policy(policy: str, host_metrics: Sequence[dict], first_step: int,
                 skipped_before: int, checkpointer, is_main: bool = True) -> list[int]:
  """Finds the non-finite steps among `host_metrics` and applies nan_policy to them.

  Returns the bad steps (empty when all were finite); raises NonFiniteError under 'stop'.
  """
  bad = bad_steps(host_metrics, first_step, skipped_before)
  if not bad:
    return bad
  first = host_metrics[bad[0] - first_step]
  values = f"loss={float(first['loss'])}, grad_norm={float(first['grad_norm'])}"
  if policy == "stop":
    raise NonFiniteError(
        f"step {bad[0]}: the loss or gradients are not finite ({values}) and "
        f"config.train.nan_policy=stop; the update was not applied. Last good checkpoint: "
        f"{last_good_checkpoint(checkpointer)}. Rerun to resume from it, or set "
        "--config.train.nan_policy=skip to drop such updates and go on.")
  if is_main:
    total = int(host_metrics[-1]["skipped_steps"])
    print(f"step(s) {', '.join(map(str, bad))}: non-finite loss or gradients ({values}); "
          f"update skipped (nan_policy=skip; {total} skipped in total)", flush=True)
  return bad
