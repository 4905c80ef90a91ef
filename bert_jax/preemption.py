"""Preemption: SIGTERM -> finish the current step, write a checkpoint, exit 0.

A TPU maintenance event, a spot VM reclaim, `gcloud ... stop` and `launch/worker.sh stop`
all send SIGTERM and give the process a grace period. The training loop asks
`should_stop()` (and orbax's `reached_preemption(step)`) after every step; when either
says stop it saves a checkpoint of that step, waits for it to be complete, and returns
normally, so the process exits 0 and the same command resumes from that step.

Two mechanisms, because every host of a pod must stop at the *same* step (a host that
stopped early would leave the others blocked in an all-reduce forever):

- several processes (`jax.distributed` initialised): JAX's preemption sync manager (TSL,
  on by default with `jax_enable_preemption_service`) catches SIGTERM on any host, tells
  the others through the coordinator, and they agree on the next safe step; orbax's
  `CheckpointManager.reached_preemption(step)` turns True on every host at that step. No
  Python handler is installed then: it would replace TSL's and break the agreement.
- one process: a Python handler records the signal and `should_stop()` returns True.
"""
from __future__ import annotations

import signal
import sys
import time
from typing import Callable

from absl import logging


def _sync_manager_active() -> bool:
  """True when jax.distributed runs with its preemption sync manager (multi-host path)."""
  try:
    from jax._src import distributed as jax_distributed
  except ImportError:  # pragma: no cover
    return False
  state = jax_distributed.global_state
  return state.client is not None and state.preemption_sync_manager is not None


class PreemptionWatcher:
  """Callable `should_stop()`: True once SIGTERM (or another watched signal) arrived."""

  def __init__(self):
    self.received: str | None = None  # the signal's name, once received
    self.received_at: float | None = None
    self._previous: dict[int, object] = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is None:
      self.received = signal.Signals(signum).name
      self.received_at = time.time()
      print(f"bert_jax: {self.received} received: finishing the current step, then "
            "writing a checkpoint and exiting 0 (rerun the same command to resume).",
            file=sys.stderr, flush=True)

  def install(self, signals=(signal.SIGTERM,)) -> "PreemptionWatcher":
    for s in signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def uninstall(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def __call__(self) -> bool:
    return self.received is not None


def install() -> Callable[[], bool]:
  """Sets up SIGTERM handling for this process; returns the loop's `should_stop`.

  Call from the main thread after `jax.distributed` is initialised (or not).
  """
  if _sync_manager_active():
    logging.info("SIGTERM is handled by jax's preemption sync manager (all hosts stop at "
                 "the same step).")
    return lambda: False  # the loop's reached_preemption(step) does the work
  return PreemptionWatcher().install()
