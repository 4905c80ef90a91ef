"""Fault injection and read logging for the reliability tests, switched on by env vars.

The reliability tests (tests/test_fault_tolerance.py, tests/test_multihost.py) run the
real CLI in subprocesses (tests/_faulty_main.py: `install()`, then bert_jax.main's
start-up) and need to make it fail in precise ways, or to see what each host read. The
library does not import this: `install()` wraps its existing seams (train.default_iterator,
the checkpoint data item's finalize, preflight.free_bytes) when a variable is set.

BERT_JAX_FAULTS: comma-separated faults,
  nan_batch@S       the batch of step S (1-based) carries a NaN masked_lm_weight, so the
                    loss and gradients of that step are NaN (nan_policy decides);
  inf_batch@S       the same with +Inf;
  kill_in_save@S    SIGKILL this process in the middle of saving the checkpoint of step
                    S: its array files are on disk, orbax has not yet finalised the items
                    and renamed the step directory from its tmp name;
  step_delay=SEC    sleep SEC before each step (so a test can signal mid-run);
  free_bytes=N      pretend the workdir's filesystem has N bytes free (preflight.py).
BERT_JAX_READ_LOG: a directory; each process appends one JSON line per source read of
  the train split to reads_process_<i>.jsonl: {"process", "count", "indices"}.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np

ENV_FAULTS = "BERT_JAX_FAULTS"
ENV_READ_LOG = "BERT_JAX_READ_LOG"
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class FaultSpecError(ValueError):
  """A malformed $BERT_JAX_FAULTS; the message shows the accepted forms."""


@dataclasses.dataclass(frozen=True)
class Faults:
  nan_batch: int | None = None
  inf_batch: int | None = None
  kill_in_save: int | None = None
  step_delay: float = 0.0
  free_bytes: int | None = None

  def any_batch_fault(self) -> bool:
    return self.nan_batch is not None or self.inf_batch is not None or self.step_delay > 0


def parse(spec: str) -> Faults:
  """'nan_batch@3,step_delay=0.2' -> Faults."""
  values: dict[str, Any] = {}
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    m = re.fullmatch(r"(nan_batch|inf_batch|kill_in_save)@(\d+)|(step_delay|free_bytes)=([\d.]+)",
                     item)
    if not m:
      raise FaultSpecError(
          f"${ENV_FAULTS}: cannot parse {item!r}; use nan_batch@STEP, inf_batch@STEP, "
          "kill_in_save@STEP, step_delay=SECONDS or free_bytes=N, comma-separated.")
    if m.group(1):
      values[m.group(1)] = int(m.group(2))
    elif m.group(3) == "step_delay":
      values["step_delay"] = float(m.group(4))
    else:
      values["free_bytes"] = int(float(m.group(4)))
  return Faults(**values)


def active() -> Faults:
  """The faults requested by $BERT_JAX_FAULTS (none when unset)."""
  return parse(os.environ.get(ENV_FAULTS, ""))


def _process_index() -> int:
  import jax
  return jax.process_index()


# --------------------------------------------------------------------------------------
# Batches: NaN/Inf injection, slow steps, read logging.

class _RecordingSource:
  """A data source proxy that logs every read of indices (which records this host read)."""

  def __init__(self, source, path: str):
    self._source = source
    self._path = path
    self.metadata = getattr(source, "metadata", None)

  def __len__(self) -> int:
    return len(self._source)

  def read(self, indices):
    with open(self._path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"process": _process_index(), "count": len(indices),
                          "indices": [int(i) for i in indices]}) + "\n")
    return self._source.read(indices)


class FaultyIterator:
  """Wraps a batch iterator: poisons the batch of one step, sleeps before each step."""

  def __init__(self, iterator, faults: Faults):
    self._it = iterator
    self._faults = faults
    self._next_step = 1  # the (1-based) step the next batch is used for

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if hasattr(self._it, "get_state"):
      state = self._it.get_state()
      if isinstance(state, dict) and "step" in state:
        self._next_step = int(state["step"]) + 1
    batch = next(self._it)
    step, self._next_step = self._next_step, self._next_step + 1
    if self._faults.step_delay:
      time.sleep(self._faults.step_delay)
    bad = {self._faults.nan_batch: np.nan, self._faults.inf_batch: np.inf}
    if step in bad:
      batch = dict(batch)
      w = np.array(batch["masked_lm_weights"], np.float32)
      w.reshape(-1)[0] = bad[step]
      batch["masked_lm_weights"] = w
      print(f"bert_jax fault injection: {bad[step]} in the batch of step {step}",
            file=sys.stderr, flush=True)
    return batch

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)

  def __getattr__(self, name):  # everything else (close, stream, ...) from the iterator
    return getattr(self._it, name)


def wrap_make_iterator(make_iterator: Callable[..., Any]) -> Callable[..., Any]:
  """make_iterator itself when no fault or read log is requested; else a wrapped one."""
  faults = active()
  log_dir = os.environ.get(ENV_READ_LOG)
  if not faults.any_batch_fault() and not log_dir:
    return make_iterator

  def make(config, tokenizer, split, *args, **kwargs):
    it = make_iterator(config, tokenizer, split, *args, **kwargs)
    if split != "train":
      return it
    if log_dir and hasattr(it, "stream"):
      os.makedirs(log_dir, exist_ok=True)
      path = os.path.join(log_dir, f"reads_process_{_process_index()}.jsonl")
      it.stream.source = _RecordingSource(it.stream.source, path)
    return FaultyIterator(it, faults) if faults.any_batch_fault() else it
  return make


# --------------------------------------------------------------------------------------
# Checkpoints: SIGKILL in the middle of a save.

def _step_dir(directory) -> tuple[int, str] | None:
  """(step, step directory) of the orbax (tmp) step directory that `directory` lies in."""
  parts = os.fspath(directory).split("/")
  for i in range(len(parts) - 1, -1, -1):
    m = re.fullmatch(r"(\d+)(" + re.escape(TMP_SUFFIX) + r".*)?", parts[i])
    if m:
      return int(m.group(1)), "/".join(parts[:i + 1])
  return None


def _files(step_dir: str) -> list[str]:
  return [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]


def on_checkpoint_finalize(directory) -> None:
  """Called when orbax finalises this process's data item of a checkpoint (`directory`).

  With kill_in_save@S and this being step S's save, SIGKILLs the process there: the
  train state's arrays are written but the checkpoint is not committed (orbax finalises
  the items one by one, then renames the step directory from its tmp name), the moment
  at which a non-atomic checkpoint would be left half-finished as the "latest" one.
  """
  faults = active()
  found = _step_dir(directory)
  if faults.kill_in_save is None or found is None or found[0] != faults.kill_in_save:
    return
  step_dir = found[1]
  files = _files(step_dir)
  print(f"bert_jax fault injection: SIGKILL while saving step {faults.kill_in_save}: "
        f"{len(files)} files written under {step_dir}, not yet committed",
        file=sys.stderr, flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------
# Installing the faults into the library's seams.

def install() -> None:
  """Wraps the library's seams with the faults and read log the env vars ask for."""
  from bert_jax import checkpoints, preflight, train
  faults = active()
  train.default_iterator = wrap_make_iterator(train.default_iterator)
  if faults.kill_in_save is not None:
    finalize = checkpoints.DataStateHandler.finalize

    def finalize_or_die(self, directory):
      on_checkpoint_finalize(directory)
      return finalize(self, directory)
    checkpoints.DataStateHandler.finalize = finalize_or_die
  if faults.free_bytes is not None:
    preflight.free_bytes = lambda workdir: faults.free_bytes

