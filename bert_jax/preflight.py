"""Bad places: is the workdir usable, and can this config continue what it holds?

Checked before anything is written, loaded or compiled, so a days-long run never starts
on a workdir that will fail at its first checkpoint, and never silently restarts from
scratch over someone else's run (or continues it with a model it was not trained as):

1. writable: the workdir is created and a probe file is written, fsync'ed and removed
   (one per process); a permission error, a read-only filesystem, a file in the way or a
   full disk fails here with the path and the fix;
2. room (local filesystems): at least one more checkpoint of this train state must fit
   (its size is computed from the state's shapes; Adam keeps 3 copies of the params);
3. resume: when the workdir holds a complete checkpoint, its saved config and parameter
   shapes must fit this config. Keys that make a different model or a different data
   stream (RESUME_KEYS) must be equal, or it is an error naming the key, both values and
   both fixes (resume with the old value, or start a new --workdir, optionally warm-started
   from this one with --config.init_checkpoint). Other changed keys (num_steps,
   learning_rate, mesh, ...) are listed and the run resumes with the new values: a
   different mesh or host count is fine, orbax reshards on restore.

And after compiling, before the first step (check_memory_fits, one place for every loop:
pre-training, fine-tuning, SQuAD prediction, bert_jax.tools.predict):

4. memory: the compiled program's arguments + temporaries + outputs that do not reuse an
   argument's buffer (`memory_analysis()`, per device) must fit the device: its HBM
   (`memory_stats()['bytes_limit']`) on TPU/GPU, the host's available RAM (MemAvailable,
   or the cgroup's limit if lower) shared by the local devices on CPU. If not, one line
   says how much it needs, how much there is, and which batch size, gradient accumulation
   or remat would fit; `removed_on_failure` removes the directories the run created.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import os
import shutil  # io: local-only (local dir)
import time
from typing import Any, Callable

import jax
import numpy as np
from etils import epath

from bert_jax import checkpoints, paths
from bert_jax import config as config_lib
from bert_jax.paths import WorkdirError

# Keys that must not change while a run is resumed: they change the parameter tree, what
# the weights mean, or which examples the data stream yields.
SHAPE_KEYS = tuple(f"model.{k}" for k in config_lib.MODEL_SHAPE_KEYS)
RESUME_KEYS = SHAPE_KEYS + (
    "task", "seed", "do_lower_case",
    "model.scan_layers", "model.param_dtype", "model.hidden_act",
    "data.max_seq_length", "data.max_predictions_per_seq", "data.masked_lm_prob",
    "data.short_seq_prob", "data.dupe_factor", "data.whole_word_mask", "data.pairing",
    "data.documents_per_window", "data.dynamic_masking",
    "train.batch_size", "train.optimizer")
# Keys that never affect the trajectory: not even worth a note when they change.
OPERATIONAL_KEYS = ("mesh.", "train.log_every", "train.eval_every", "train.eval_steps",
                    "train.checkpoint_every", "train.keep_checkpoints",
                    "train.async_checkpointing", "train.profile",
                    "train.peak_flops_per_device", "data.prefetch", "data.num_workers",
                    "data.eval_files", "init_checkpoint", "init_mode")
PROBE_NAME = ".bert_jax_write_probe"
PROBE_BYTES = 1 << 16
MiB = 1 << 20


def probe_path(workdir, process_index: int | None = None) -> epath.Path:
  """The probe file a process writes to prove the workdir is writable."""
  i = jax.process_index() if process_index is None else process_index
  return epath.Path(workdir) / f"{PROBE_NAME}.{i}"


def check_writable(workdir) -> None:
  """Creates the workdir and writes, syncs and removes a probe file; WorkdirError if not."""
  wd = epath.Path(workdir)
  probe = probe_path(wd)
  try:
    wd.mkdir(parents=True, exist_ok=True)
    paths.fsync_write(probe, b"\0" * PROBE_BYTES)
    probe.unlink()
  except OSError as e:
    try:
      probe.unlink(missing_ok=True)
    except OSError:
      pass
    raise WorkdirError(
        f"--workdir={workdir} is not writable: {paths.explain_os_error(e)} ({type(e).__name__}: "
        f"{e.strerror or e}); choose a directory this process can write (with room for "
        "checkpoints) or fix it.") from None


def state_bytes(abstract_state) -> int:
  """Bytes of a checkpoint of this state (the arrays; metadata is small)."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(abstract_state) if hasattr(x, "shape")))


def free_bytes(workdir) -> int | None:
  """Free bytes on the workdir's filesystem (None for object stores such as gs://)."""
  return paths.free_bytes(workdir)


def check_free_space(workdir, checkpoint_bytes: int) -> None:
  """At least one more checkpoint (uncompressed, +10% and 1 MiB of metadata) must fit."""
  free = free_bytes(workdir)
  need = int(checkpoint_bytes * 1.1) + MiB
  if free is not None and free < need:
    raise WorkdirError(
        f"--workdir={workdir} has {free / MiB:.1f} MiB free, but one checkpoint of this "
        f"train state takes ~{need / MiB:.1f} MiB: free space there or choose another "
        "--workdir (the disk would fill at the first checkpoint).")


def _normalise(value):
  """Tuples and lists compare equal (the saved config went through JSON)."""
  return json.loads(json.dumps(value, default=str))


Change = tuple[str, Any, Any]  # (dotted key, saved value, new value)


def config_changes(saved: dict, config) -> tuple[list[Change], list[Change]]:
  """(incompatible, noted) differences between a checkpoint's saved config and `config`."""
  old = checkpoints.dotted(_normalise(saved))
  new = checkpoints.dotted(_normalise(config.to_dict()))
  incompatible, noted = [], []
  for key in sorted(set(old) & set(new)):
    if old[key] == new[key] or key.startswith(OPERATIONAL_KEYS):
      continue
    (incompatible if key in RESUME_KEYS else noted).append(key)
  order = {k: i for i, k in enumerate(RESUME_KEYS)}
  incompatible.sort(key=order.get)
  return ([(k, old[k], new[k]) for k in incompatible],
          [(k, old[k], new[k]) for k in noted])


def param_shapes(abstract_state) -> dict[str, tuple]:
  """The same for the train state this config builds."""
  return {k: tuple(v.shape) for k, v in checkpoints.dotted(abstract_state.params).items()}


def check_resume(config, workdir, checkpoint_dir, abstract_state_fn=None) -> str | None:
  """WorkdirError when workdir's latest checkpoint cannot be continued with `config`.

  Returns a note listing the compatible changes (None when nothing differs or there is
  no checkpoint).
  """
  found = checkpoints.latest_checkpoint(checkpoint_dir)
  if found is None:
    return None
  step, step_dir = found
  fresh = (f"use a new --workdir for a new run (to start from these weights: "
           f"--config.init_checkpoint={workdir} --config.init_mode=full)")
  saved = checkpoints.saved_config(step_dir)
  notes = None
  if saved is not None:
    incompatible, noted = config_changes(saved, config)
    if incompatible:
      key, was, now = incompatible[0]
      what = ("a checkpoint of a different model" if key in SHAPE_KEYS else
              "a run that this config cannot continue")
      more = (f" (also differ: {', '.join(c[0] for c in incompatible[1:])})"
              if len(incompatible) > 1 else "")
      raise WorkdirError(
          f"--workdir={workdir} holds {what} (checkpoint step {step}): config.{key}={was!r} "
          f"there, {now!r} now{more}. To resume it, pass --config.{key}={was!r}; otherwise "
          f"{fresh}.")
    if noted:
      notes = (f"resuming step {step} of {workdir} with changed config: "
               + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in noted))
  if abstract_state_fn is not None:
    ours = param_shapes(abstract_state_fn())
    theirs = checkpoints.param_shapes_from_checkpoint(step_dir)
    for name in sorted(set(ours) | set(theirs)):
      if ours.get(name) != theirs.get(name):
        raise WorkdirError(
            f"--workdir={workdir} holds a checkpoint (step {step}) of a different model: "
            f"parameter {name} has shape {theirs.get(name, 'absent')} there, "
            f"{ours.get(name, 'absent')} in this config. Resume it with the config it was "
            f"written with ({step_dir}/config/metadata), or {fresh}.")
  return notes


def check_workdir(config, workdir, checkpoint_dir,
                  abstract_state_fn: Callable[[], Any] | None = None) -> str | None:
  """All the checks above, in order; returns the resume note (or None).

  Args:
    config: the run's config.
    workdir: --workdir (local path or gs://).
    checkpoint_dir: where the run's orbax checkpoints live (workdir/checkpoints).
    abstract_state_fn: () -> the train state's ShapeDtypeStructs (sizes and shapes).
  """
  check_writable(workdir)
  abstract = abstract_state_fn() if abstract_state_fn is not None else None
  if abstract is not None:
    check_free_space(workdir, state_bytes(abstract))
  return check_resume(config, workdir, checkpoint_dir,
                      (lambda: abstract) if abstract is not None else None)


# ---------------------------------------------------------------------------------------
# Memory: does the compiled program fit the devices?
# ---------------------------------------------------------------------------------------

GiB = 1 << 30
# Hints aim below the capacity: they extrapolate from one compiled size, and the
# allocator needs some room of its own.
HINT_HEADROOM = 0.9


class DoesNotFitError(ValueError):
  """A compiled program needs more memory than the devices have; the message says how
  much it needs, how much there is and which config changes would fit."""


@dataclasses.dataclass(frozen=True)
class MemoryHints:
  """What the memory message may suggest changing, and the flags that change it.

  Attributes:
    what: the program, for the message ("train step", "eval step", "prediction").
    batch_size: global rows per step (over all micro-steps).
    batch_flag: the flag that sets it ("--config.train.batch_size").
    batch_shards: devices the batch is split over (the mesh's data x fsdp axes).
    shape: the rest of the batch's shape, for the message ("seq 128").
    grad_accum_steps: micro-steps per step (1 for prediction).
    grad_accum_flag: the flag that sets it; None: the program accumulates no gradients.
    remat: config.model.remat of a program with a backward pass; None: no backward pass.
    fixed_bytes: bytes per device that do not shrink with the batch (parameters,
      optimizer state, gradients).
    accum_bytes: further bytes per device once grad_accum_steps > 1 (the gradient sum).
    resident_bytes: bytes per device the run holds besides this program's own (the
      train state and best params while a fine-tuning run evaluates); counted as needed.
  """
  what: str
  batch_size: int
  batch_flag: str
  batch_shards: int = 1
  shape: str = ""
  grad_accum_steps: int = 1
  grad_accum_flag: str | None = None
  remat: str | None = None
  fixed_bytes: int = 0
  accum_bytes: int = 0
  resident_bytes: int = 0


def bytes_per_device(tree) -> int:
  """Bytes the fullest device holds of a tree of (sharded) arrays or ShapeDtypeStructs."""
  total = 0
  for x in jax.tree_util.tree_leaves(tree):
    if not hasattr(x, "shape"):
      continue
    sharding = getattr(x, "sharding", None)
    shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


def train_hints(config, mesh, abstract_state, shape: str, what: str = "train step"
                ) -> MemoryHints:
  """MemoryHints for a train step of `config` (config.train's batch and accumulation,
  config.model.remat) on `mesh`, with the state's and the gradients' bytes fixed."""
  from bert_jax import partitioning
  params = bytes_per_device(abstract_state.params)
  return MemoryHints(
      what=what, batch_size=int(config.train.batch_size),
      batch_flag="--config.train.batch_size",
      batch_shards=partitioning.data_parallel_size(mesh), shape=shape,
      grad_accum_steps=int(config.train.grad_accum_steps),
      grad_accum_flag="--config.train.grad_accum_steps", remat=str(config.model.remat),
      fixed_bytes=bytes_per_device(abstract_state) + params, accum_bytes=params)


def host_available_bytes() -> int | None:
  """RAM this process can still allocate: MemAvailable, or the cgroup's room if lower."""
  avail = None
  try:
    with open("/proc/meminfo", encoding="ascii") as f:  # io: local-only (kernel file)
      for line in f:
        if line.startswith("MemAvailable:"):
          avail = int(line.split()[1]) * 1024
          break
  except (OSError, ValueError, IndexError):
    pass
  if avail is None:  # not Linux
    try:
      avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
      pass
  room = _cgroup_room()
  if room is not None:
    avail = room if avail is None else min(avail, room)
  return avail


def _cgroup_room() -> int | None:
  """limit - usage + reclaimable page cache of this container's memory cgroup (v2 or v1);
  None when there is no limit."""
  for limit_f, usage_f, stat_f, cache_key in (
      ("memory.max", "memory.current", "memory.stat", "inactive_file"),
      ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
       "total_inactive_file")):
    try:
      with open(f"/sys/fs/cgroup/{limit_f}", encoding="ascii") as f:  # io: local-only (kernel file)
        limit = f.read().strip()
      if limit == "max" or int(limit) >= 1 << 60:
        return None
      with open(f"/sys/fs/cgroup/{usage_f}", encoding="ascii") as f:  # io: local-only (kernel file)
        usage = int(f.read())
      cache = 0
      with open(f"/sys/fs/cgroup/{stat_f}", encoding="ascii") as f:  # io: local-only (kernel file)
        for line in f:
          key, _, value = line.partition(" ")
          if key == cache_key:
            cache = int(value)
      return max(int(limit) - usage + cache, 0)
    except (OSError, ValueError):
      continue
  return None


def device_memory(devices) -> tuple[int, str] | None:
  """(bytes one device can use, what they are for the message), or None when unknown.

  TPU/GPU: the smallest `memory_stats()['bytes_limit']` of this process's devices. CPU:
  the host's available RAM, divided among this process's CPU devices (they share it).
  """
  local = [d for d in devices if d.process_index == jax.process_index()] or list(devices)
  if local[0].platform == "cpu":
    avail = host_available_bytes()
    if avail is None:
      return None
    n = len(local)
    if n == 1:
      return avail, f"the host has {_gib(avail)} of RAM available"
    return avail // n, (f"each has {_gib(avail // n)} ({_gib(avail)} of host RAM available, "
                        f"shared by {n} CPU devices)")
  limits = []
  for d in local:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except  (a backend without memory stats)
      stats = None
    if not stats or not stats.get("bytes_limit"):
      return None
    limits.append(int(stats["bytes_limit"]))
  return min(limits), f"a {local[0].device_kind} device has {_gib(min(limits))}"


def _gib(n: float) -> str:
  return f"{n / GiB:.1f} GiB" if n >= GiB // 10 else f"{n / 2**20:.0f} MiB"


def memory_needed(compiled) -> tuple[int, str] | None:
  """(bytes per device, 'arguments A + temporaries T ...') from memory_analysis()."""
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    mem = None
  if mem is None:
    return None
  args, temp = int(mem.argument_size_in_bytes), int(mem.temp_size_in_bytes)
  out = max(int(mem.output_size_in_bytes) - int(mem.alias_size_in_bytes), 0)
  code = int(getattr(mem, "generated_code_size_in_bytes", 0) or 0)
  parts = [f"arguments {_gib(args)}", f"temporaries {_gib(temp)}"]
  if out >= GiB // 10:
    parts.append(f"outputs {_gib(out)}")
  if code >= GiB // 10:
    parts.append(f"code {_gib(code)}")
  return args + temp + out + code, " + ".join(parts)


def fit_hints(h: MemoryHints, needed: int, capacity: int) -> str:
  """The config changes that would fit, as one sentence. Estimated from one compiled
  size: what is not fixed (activations and their gradients) scales with the rows per
  device and micro-step."""
  target = HINT_HEADROOM * capacity
  k, shards = max(h.grad_accum_steps, 1), max(h.batch_shards, 1)
  fixed_at = lambda accum: (h.fixed_bytes + h.resident_bytes
                            + (h.accum_bytes if accum > 1 else 0))
  rows = max(h.batch_size // (shards * k), 1)  # per device and micro-step
  per_row = max(needed - fixed_at(k), 0) / rows
  if fixed_at(1) >= target or per_row <= 0:
    shard = (" shard them over more devices (FSDP: --config.mesh.shape='(1,-1,1)'), or"
             if h.batch_flag.startswith("--config.") else "")
    return (f"The parameters{' and optimizer state' if h.grad_accum_flag else ''} alone "
            f"take {_gib(fixed_at(1))} per device:{shard} use a smaller model or devices "
            "with more memory.")
  fits = lambda r, accum: fixed_at(accum) + per_row * r <= target
  would = []
  if h.grad_accum_flag:
    for k2 in range(k + 1, h.batch_size // shards + 1):
      if h.batch_size % (shards * k2) == 0 and fits(h.batch_size // (shards * k2), k2):
        would.append(f"{h.grad_accum_flag}={k2} (the same batch in micro-batches of "
                     f"{h.batch_size // k2})")
        break
  max_rows = min(int((target - fixed_at(k)) // per_row), rows - 1)
  if max_rows >= 1:  # a power of two: the usual batch sizes, and it divides evenly
    would.append(f"{h.batch_flag}={(1 << (max_rows.bit_length() - 1)) * shards * k}")
  remat = (h.remat is not None and h.remat != "full")
  remat_text = ("--config.model.remat=full (recomputes each layer in the backward pass: "
                "less memory for activations, about a third more compute)")
  if would:
    return (f"Would fit (estimated): {' or '.join(would)}"
            + (f"; {remat_text} also saves memory." if remat else "."))
  if remat:
    return f"Try {remat_text}, or devices with more memory."
  return "Use devices with more memory."


def check_memory_fits(compiled, devices, hints: MemoryHints, *,
                      capacity: int | None = None,
                      allocated_bytes: int = 0) -> tuple[int, int] | None:
  """Raises DoesNotFitError when `compiled` needs more memory per device than `devices`
  have; returns (needed, available) bytes per device, or None if either is unknown.

  Args:
    compiled: a compiled program (`jax.jit(f).lower(...).compile()`), not yet run.
    devices: the devices it runs on (e.g. `mesh.devices.flat`).
    hints: the batch it was compiled for and the flags that change it (MemoryHints).
    capacity: bytes per device to check against instead of the device's (tests).
    allocated_bytes: bytes per device of its arguments that are allocated already (on a
      CPU they are no longer in the host's available RAM, so they are added back).
  """
  devices = list(devices)
  need = memory_needed(compiled)
  found = ((capacity, f"the limit is {_gib(capacity)}") if capacity is not None
           else device_memory(devices))
  if need is None or found is None:
    return None
  (needed, parts), (available, there) = need, found
  if hints.resident_bytes:
    needed += hints.resident_bytes
    parts += f" + train state held meanwhile {_gib(hints.resident_bytes)}"
  if capacity is None and allocated_bytes and devices[0].platform == "cpu":
    available += allocated_bytes
    there += f" (+{_gib(allocated_bytes)} already holding its arguments)"
  if needed > available:
    raise DoesNotFitError(_does_not_fit(hints, needed, parts, available, there))
  return needed, available


def _does_not_fit(h: MemoryHints, needed: int, parts: str, available: int,
                  there: str) -> str:
  batch = f"batch {h.batch_size}" + (f" x {h.shape}" if h.shape else "")
  return (f"the {h.what} does not fit in memory: at {batch} it needs {_gib(needed)} per "
          f"device ({parts}), and {there}. {fit_hints(h, needed, available)}")


# XLA:TPU's out-of-memory messages: "... Used 52.47G of 15.48G hbm ..." or "... required
# for HLO temporaries (34.58G) exceeds available HBM (15.75G)".
_OOM = (re.compile(r"Used ([\d.]+)([KMGT]?)i?B? of ([\d.]+)([KMGT]?)i?B? hbm", re.I),
        re.compile(r"\(([\d.]+)([KMGT]?)i?B?\) exceeds available HBM \(([\d.]+)([KMGT]?)i?B?\)",
                   re.I))
_UNIT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_oom(message: str) -> tuple[int, int] | None:
  """An XLA:TPU out-of-memory error -> (bytes needed, bytes available) per device."""
  for pattern in _OOM:
    m = pattern.search(message)
    if m:
      return (int(float(m.group(1)) * _UNIT[m.group(2).upper()]),
              int(float(m.group(3)) * _UNIT[m.group(4).upper()]))
  return None


def compile_checked(lowered, devices, hints: MemoryHints, *, capacity: int | None = None,
                    allocated_bytes: int = 0, report: Callable | None = None):
  """lowered.compile(), then check_memory_fits (arguments as there); XLA:TPU refusing a
  program too big for its HBM at compile time raises the same DoesNotFitError (with the
  compiler's figures). `report(compiled, seconds)` runs between the two (the loops print
  the compile time and memory)."""
  devices = list(devices)
  t0 = time.time()
  try:
    compiled = lowered.compile()
  except Exception as e:  # XLA raises a runtime error; only an out-of-memory is ours
    oom = parse_oom(str(e))
    if oom is None:
      raise
    raise DoesNotFitError(_does_not_fit(
        hints, oom[0], "the compiler's figure", oom[1],
        f"a {devices[0].device_kind} device has {_gib(oom[1])}")) from None
  if report is not None:
    report(compiled, time.time() - t0)
  check_memory_fits(compiled, devices, hints, capacity=capacity,
                    allocated_bytes=allocated_bytes)
  return compiled


@contextlib.contextmanager
def removed_on_failure(workdir, errors=(DoesNotFitError,)):
  """When the body raises one of `errors` (re-raised), removes the directories it
  created under and above `workdir` that are still empty, and the log directory it
  created (console.py's <workdir>/logs: only this run's log is in it).

  Every loop checks its memory before it writes a file (only its directories and log
  exist by then), so a fresh workdir goes away entirely; no other file is deleted: a
  workdir that holds another run (or a finished GLUE task of this one) keeps all of it.
  """
  if paths.is_remote(workdir):  # object stores have no empty directories to leave behind
    yield
    return
  wd = os.path.abspath(os.fspath(workdir))  # io: local-only (local dir)
  top = wd
  while not os.path.exists(top) and os.path.dirname(top) != top:  # io: local-only (local dir)
    top = os.path.dirname(top)  # io: local-only (local dir)
  before = {d for d, _, _ in os.walk(wd)} if os.path.isdir(wd) else set()  # io: local-only (local dir)
  try:
    yield
  except errors:
    from bert_jax import console
    logs = os.path.join(wd, console.LOG_SUBDIR)  # io: local-only (local dir)
    if logs not in before and os.path.isdir(logs):  # io: local-only (local dir)
      shutil.rmtree(logs, ignore_errors=True)  # io: local-only (local dir)
    for d, _, _ in sorted(os.walk(wd, topdown=False), key=lambda w: -len(w[0])):  # io: local-only (local dir)
      if d not in before:
        _rmdir_if_empty(d)
    d = wd
    while d != top and d not in before and len(d) > len(top):
      _rmdir_if_empty(d)
      d = os.path.dirname(d)  # io: local-only (local dir)
    raise


def _rmdir_if_empty(d: str) -> None:
  try:
    os.rmdir(d)  # io: local-only (local dir)
  except OSError:  # not empty (or gone): keep it
    pass
