"""Reruns of a fine-tuning workdir: finished runs are read, interrupted ones resume, and
a run of another config is refused with the differing keys named (or, with
finetune.overwrite, deleted first). Also the loop's stop hook (SIGTERM / preemption).
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, Callable

import jax

from bert_jax import checkpoints, metrics, paths


class FinetuneError(ValueError):
  """Fine-tuning cannot start (bad checkpoint/vocab/data); the message names the fix."""


RESULTS_FILE = "results.json"  # written last: its presence marks a finished run
SWEEP_FILE = "sweep.json"
CONFIG_FILE = "config.json"
PARTIAL_DIR = "predict_partial"  # test-set outputs of finished batches, while predicting
# What a rerun with finetune.overwrite=True deletes (prediction files are rewritten).
RUN_FILES = (checkpoints.RUN_CHECKPOINT_DIR, RESULTS_FILE, metrics.METRICS_FILE,
             "tensorboard", checkpoints.BEST_DIR, PARTIAL_DIR)
# Config keys a rerun may change without changing what is computed: logging, checkpoint
# cadence, where outputs and compiled programs go, the sweep grid around this run, the
# test files predicted after training, and the mesh (orbax reshards; sums may then round
# differently).
RESUME_SAFE_KEYS = (
    "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.async_checkpointing", "train.profile", "train.peak_flops_per_device",
    "train.compilation_cache_dir",
    "finetune.checkpoint_every", "finetune.keep_checkpoints", "finetune.overwrite",
    "finetune.save_best", "finetune.write_dev_predictions", "finetune.sweep",
    "finetune.sweep_learning_rates", "finetune.sweep_seeds",
    "glue.output_dir", "squad.output_dir", "squad.mode", "squad.predict_file",
    "squad.params_dir", "swag.test_file")
RESUME_SAFE_PREFIXES = ("mesh.",)


def run_record(config, task: Any) -> dict[str, Any]:
  """The run's config as plain JSON data, as checkpoints and results.json keep it; with
  several GLUE tasks in one command, glue.task is this run's task."""
  record = json.loads(json.dumps(config.to_dict(), default=str))
  if isinstance(record.get("glue"), dict):
    record["glue"]["task"] = task.name
  return record


def config_differences(saved: dict, record: dict) -> tuple[list[str], list[str]]:
  """(keys whose change would change the run, harmless changed keys) between the config
  a workdir's run was written with and this one (both as run_record gives them)."""
  a, b = checkpoints.dotted(saved), checkpoints.dotted(record)
  changed = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
  safe = [k for k in changed if k in RESUME_SAFE_KEYS or k.startswith(RESUME_SAFE_PREFIXES)]
  return [k for k in changed if k not in safe], safe


def check_same_run(saved: dict | None, record: dict, workdir: str, what: str) -> None:
  """Raises FinetuneError naming every key that differs (not the harmless ones)."""
  if saved is None:
    return
  refused, harmless = config_differences(saved, record)
  if refused:
    a, b = checkpoints.dotted(saved), checkpoints.dotted(record)
    shown = "; ".join(f"{k}: {a.get(k, '<unset>')!r} there, {b.get(k, '<unset>')!r} now"
                      for k in refused[:8]) + (" ..." if len(refused) > 8 else "")
    raise FinetuneError(
        f"{workdir} holds {what} with another config ({shown}). Rerun with the same config "
        "to resume it, pass a new --workdir, or add --config.finetune.overwrite=True to "
        "delete that run and start over.")
  if harmless:
    metrics.log(f"note: resuming {what} in {workdir} with changed "
                f"{', '.join(harmless)} (they do not change what is computed)")


def clear_run(workdir: str) -> None:
  """finetune.overwrite: the run files of an earlier run in workdir go (process 0 deletes,
  every host waits for it)."""
  from bert_jax import distributed
  if jax.process_index() == 0:
    for name in RUN_FILES:
      p = paths.join(workdir, name)
      if paths.is_dir(p):
        metrics.log(f"finetune.overwrite: deleting {p}")
        paths.rmtree(p)
      elif paths.exists(p):
        paths.remove(p)
  distributed.barrier(barrier_id("finetune_overwrite", workdir))


def barrier_id(*parts: str) -> str:
  """A barrier name unique to what it guards (a coordination-service barrier is used once)."""
  import hashlib
  return "bert_jax_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# What every results.json a finished run writes holds (finetune._run's summary).
FINISHED_KEYS = ("config", "selection_metric", "score", "best_step")


def finished_results(workdir: str, record: dict) -> dict[str, Any] | None:
  """results.json of a finished run of this config in workdir (FinetuneError if it was
  another config), or None when the run has not finished."""
  path = paths.join(workdir, RESULTS_FILE)
  if not paths.exists(path):
    return None
  results = paths.read_json(path)
  missing = [k for k in FINISHED_KEYS if not isinstance(results, dict) or k not in results]
  if missing:
    raise FinetuneError(
        f"{path} is not a finished fine-tuning run's results (no {', '.join(missing)}): "
        "pass a new --workdir, or add --config.finetune.overwrite=True to delete it and "
        "start over.")
  check_same_run(results["config"], record, workdir, "a finished run")
  return results


def stopped(results: dict | None) -> bool:
  """True for what run/sweep return when SIGTERM (or a preemption notice) stopped them."""
  return bool(results and results.get("stopped_early"))


@contextlib.contextmanager
def stop_hook(should_stop: Callable[[], bool] | None = None):
  """Yields the loop's `should_stop`: the given one, or SIGTERM handling installed for
  the duration (preemption.py: a Python handler, or JAX's preemption sync manager with
  several hosts, which the loop asks through orbax's reached_preemption)."""
  if should_stop is not None:
    yield should_stop
    return
  from bert_jax import preemption
  try:
    hook = preemption.install()
  except ValueError:  # signal handlers only in the main thread: none then
    hook = lambda: False
  try:
    yield hook
  finally:
    if hasattr(hook, "uninstall"):
      hook.uninstall()
