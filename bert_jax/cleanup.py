"""Objects that own threads finish them before the interpreter shuts down, close() or not.

A process ends in this order: threading's shutdown hooks run (concurrent.futures stops
its executors there), non-daemon threads are joined, `atexit` callbacks run, then the
interpreter is torn down. A daemon thread still inside native code at that last step
can abort the whole process after its work is done: the pre-training iterator's prefetch
threads reading ArrayRecord shards ended a script with `terminate called without an
active exception` (SIGABRT, exit 134), and an orbax async save still in flight failed
with "cannot schedule new futures after interpreter shutdown", leaving a half-written
checkpoint. So every object of ours that owns threads -- the prefetch pool
(data/input_pipeline.py), the checkpoint manager (checkpoints.Checkpointer) and the metrics
writer (metrics.MetricWriter) -- calls `close_at_exit(self)`, and its `close()` runs in
the first of those steps, before the executors stop: pending saves finish, prefetch
threads are joined, and the process exits 0. The objects are held weakly: one that was
closed and dropped is not kept alive.
"""
from __future__ import annotations

import atexit
import threading
import weakref

from absl import logging

_live: "weakref.WeakSet" = weakref.WeakSet()
_lock = threading.Lock()
_hook_installed = False


def close_at_exit(obj) -> None:
  """Calls `obj.close()` when the interpreter starts to shut down, if `obj` is alive then.

  close() must be safe to call twice (the user may have called it already).
  """
  global _hook_installed
  with _lock:
    if not _hook_installed:
      _install(close_all)
      _hook_installed = True
    _live.add(obj)


def forget(obj) -> None:
  """Drops `obj` from the exit hook (after its own close(): nothing left to do)."""
  with _lock:
    _live.discard(obj)


def close_all() -> None:
  """Closes every registered object that is still alive (the exit hook; also for tests)."""
  with _lock:
    objects = list(_live)
    _live.clear()
  for obj in objects:
    try:
      obj.close()
    except Exception:  # pylint: disable=broad-except  (one failure must not skip the rest)
      logging.exception("closing %r at exit failed", obj)


def _install(hook) -> None:
  # threading._register_atexit is what concurrent.futures itself uses to stop its
  # executors at shutdown; hooks registered later run first, so ours runs while orbax's
  # executors still accept work. atexit (later, after non-daemon threads are joined) is
  # the fallback for an interpreter without it or one that is already shutting down.
  # concurrent.futures.thread registers its hook when first imported (lazily, on the first
  # executor): import it now so that its hook comes first and runs after ours.
  import concurrent.futures.thread  # noqa: F401  pylint: disable=unused-import
  register = getattr(threading, "_register_atexit", None)
  if register is not None:
    try:
      register(hook)
      return
    except RuntimeError:  # "can't register atexit after shutdown"
      pass
  atexit.register(hook)
