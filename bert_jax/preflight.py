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
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Any, Callable, Mapping

import jax
import numpy as np
from etils import epath

from bert_jax import fault_injection
from bert_jax import paths

# Keys that must not change while a run is resumed: they change the parameter tree, what
# the weights mean, or which examples the data stream yields.
MODEL_SHAPE_KEYS = ("model.vocab_size", "model.hidden_size", "model.num_layers",
                    "model.num_heads", "model.intermediate_size",
                    "model.max_position_embeddings", "model.type_vocab_size")
RESUME_KEYS = MODEL_SHAPE_KEYS + (
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


class WorkdirError(ValueError):
  """The workdir cannot hold this run; the message names the path, the cause and the fix."""


def probe_path(workdir, process_index: int | None = None) -> epath.Path:
  """The probe file a process writes to prove the workdir is writable."""
  i = jax.process_index() if process_index is None else process_index
  return epath.Path(workdir) / f"{PROBE_NAME}.{i}"


def _explain(e: OSError) -> str:
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return "the disk is full"
  if e.errno in (errno.EACCES, errno.EPERM):
    return "permission denied"
  if e.errno == errno.EROFS:
    return "read-only filesystem"
  if e.errno in (errno.ENOTDIR, errno.EEXIST):
    return "a file is in the way"
  return os.strerror(e.errno) if e.errno else str(e)


def check_writable(workdir) -> None:
  """Creates the workdir and writes, syncs and removes a probe file; WorkdirError if not."""
  wd = epath.Path(workdir)
  probe = probe_path(wd)
  try:
    wd.mkdir(parents=True, exist_ok=True)
    if paths.is_remote(wd):  # object stores: no fsync, a write + delete is the probe
      probe.write_bytes(b"\0" * PROBE_BYTES)
    else:
      with open(os.fspath(probe), "wb") as f:
        f.write(b"\0" * PROBE_BYTES)
        f.flush()
        os.fsync(f.fileno())
    probe.unlink()
  except OSError as e:
    try:
      probe.unlink(missing_ok=True)
    except OSError:
      pass
    raise WorkdirError(
        f"--workdir={workdir} is not writable: {_explain(e)} ({type(e).__name__}: "
        f"{e.strerror or e}); choose a directory this process can write (with room for "
        "checkpoints) or fix it.") from None


def state_bytes(abstract_state) -> int:
  """Bytes of a checkpoint of this state (the arrays; metadata is small)."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(abstract_state) if hasattr(x, "shape")))


def free_bytes(workdir) -> int | None:
  """Free bytes on the workdir's filesystem (None for object stores such as gs://)."""
  injected = fault_injection.active().free_bytes
  if injected is not None:
    return injected
  if paths.is_remote(workdir):
    return None
  return shutil.disk_usage(os.fspath(workdir)).free


def check_free_space(workdir, checkpoint_bytes: int) -> None:
  """At least one more checkpoint (uncompressed, +10% and 1 MiB of metadata) must fit."""
  free = free_bytes(workdir)
  need = int(checkpoint_bytes * 1.1) + MiB
  if free is not None and free < need:
    raise WorkdirError(
        f"--workdir={workdir} has {free / MiB:.1f} MiB free, but one checkpoint of this "
        f"train state takes ~{need / MiB:.1f} MiB: free space there or choose another "
        "--workdir (the disk would fill at the first checkpoint).")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _normalise(value):
  """Tuples and lists compare equal (the saved config went through JSON)."""
  return json.loads(json.dumps(value, default=str))


def _latest_checkpoint(checkpoint_dir) -> tuple[int, epath.Path] | None:
  steps = paths.checkpoint_steps(checkpoint_dir) if epath.Path(checkpoint_dir).is_dir() else []
  steps = [s for s in steps if (epath.Path(checkpoint_dir) / str(s) / "state").is_dir()]
  if not steps:
    return None
  return steps[-1], epath.Path(checkpoint_dir) / str(steps[-1])


def saved_config(step_dir) -> dict | None:
  """The config a checkpoint was written with (its `config` item), or None."""
  f = epath.Path(step_dir) / "config" / "metadata"
  return json.loads(f.read_text()) if f.exists() else None


Change = tuple[str, Any, Any]  # (dotted key, saved value, new value)


def config_changes(saved: dict, config) -> tuple[list[Change], list[Change]]:
  """(incompatible, noted) differences between a checkpoint's saved config and `config`."""
  old = _flatten(_normalise(saved))
  new = _flatten(_normalise(config.to_dict()))
  incompatible, noted = [], []
  for key in sorted(set(old) & set(new)):
    if old[key] == new[key] or key.startswith(OPERATIONAL_KEYS):
      continue
    (incompatible if key in RESUME_KEYS else noted).append(key)
  order = {k: i for i, k in enumerate(RESUME_KEYS)}
  incompatible.sort(key=order.get)
  return ([(k, old[k], new[k]) for k in incompatible],
          [(k, old[k], new[k]) for k in noted])


def param_shapes_from_checkpoint(step_dir) -> dict[str, tuple]:
  """{'bert.encoder.layers.qkv.kernel': shape, ...} from a checkpoint's state metadata."""
  import orbax.checkpoint as ocp
  meta = ocp.PyTreeCheckpointer().metadata(epath.Path(step_dir) / "state").item_metadata.tree
  return {k: tuple(v.shape) for k, v in _flatten(meta["params"]).items()}


def param_shapes(abstract_state) -> dict[str, tuple]:
  """The same for the train state this config builds."""
  return {k: tuple(v.shape) for k, v in _flatten(abstract_state.params).items()}


def check_resume(config, workdir, checkpoint_dir, abstract_state_fn=None) -> str | None:
  """WorkdirError when workdir's latest checkpoint cannot be continued with `config`.

  Returns a note listing the compatible changes (None when nothing differs or there is
  no checkpoint).
  """
  found = _latest_checkpoint(checkpoint_dir)
  if found is None:
    return None
  step, step_dir = found
  fresh = (f"use a new --workdir for a new run (to start from these weights: "
           f"--config.init_checkpoint={workdir} --config.init_mode=full)")
  saved = saved_config(step_dir)
  notes = None
  if saved is not None:
    incompatible, noted = config_changes(saved, config)
    if incompatible:
      key, was, now = incompatible[0]
      what = ("a checkpoint of a different model" if key in MODEL_SHAPE_KEYS else
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
    theirs = param_shapes_from_checkpoint(step_dir)
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


def write_failure(error: BaseException, checkpoint_dir, last_complete: int | None,
                  keep: int) -> WorkdirError | None:
  """A checkpoint write that failed for lack of space -> the WorkdirError to raise instead
  (naming the last complete checkpoint and the fixes); None for any other failure."""
  message = str(error)
  full = (getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or
          "No space left on device" in message or "os_error_code='28'" in message)
  if not full:
    return None
  last = (f"step {last_complete}, which the same command resumes from once there is room"
          if last_complete is not None else "none yet")
  return WorkdirError(
      f"writing a checkpoint to {checkpoint_dir} failed: the disk is full. The last complete "
      f"checkpoint is {last}; free space there, keep fewer checkpoints "
      f"(--config.train.keep_checkpoints={keep} now) or move the run to a bigger --workdir.")
