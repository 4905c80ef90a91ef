"""What every loop reports, in one place: metrics.jsonl + TensorBoard events (MetricWriter),
progress and summary lines, durations and plain-text tables.

Pre-training, fine-tuning, data preparation and the tools all format through here, so a
duration or a table reads the same wherever it is printed.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
from typing import Any, Sequence

import numpy as np

from bert_jax import cleanup, paths

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """metrics.jsonl (one JSON object per write) + TensorBoard events, on process 0 only.

  Local or gs:// workdirs alike (through bert_jax.paths). A resumed run passes
  `resume_step`: records after it (written by the attempt that was interrupted) are
  dropped from metrics.jsonl and TensorBoard is told to purge them, so every step is in
  the logs once. On gs:// (no appends) the file is rewritten whole on each write (one
  atomic object upload) and the events are written to a local staging directory and
  copied to the bucket on each write.
  """

  def __init__(self, workdir: str, enabled: bool | None = None, resume_step: int | None = None):
    self.enabled = _process_index() == 0 if enabled is None else enabled
    self.path = paths.join(workdir, METRICS_FILE)
    self._remote = paths.is_remote(workdir)
    self._lines: list[str] = []
    self._tb = None
    self._tb_dir = paths.join(workdir, "tensorboard")
    self._tb_stage = None
    if not self.enabled:
      return
    paths.makedirs(workdir)
    if paths.exists(self.path):
      self._lines = [l for l in paths.read_text(self.path).splitlines() if l.strip()]
      if resume_step is not None:
        kept = [l for l in self._lines if _step_of(l) is None or _step_of(l) <= resume_step]
        if len(kept) != len(self._lines):
          self._lines = kept
          paths.write_text(self.path, "".join(l + "\n" for l in kept))
    try:
      from tensorboardX import SummaryWriter
    except ImportError:  # events are optional; the JSONL log is always written.
      return
    if self._remote:
      self._tb_stage = tempfile.mkdtemp(prefix="bert_jax_tb_")
    purge = None if resume_step is None else int(resume_step) + 1
    self._tb = SummaryWriter(self._tb_stage or self._tb_dir, purge_step=purge)
    cleanup.close_at_exit(self)  # its event-writer thread stops at exit, close() or not.

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: to_py(v) for k, v in metrics.items()}}
    line = json.dumps(record)
    if self._remote:
      self._lines.append(line)
      paths.write_text(self.path, "".join(l + "\n" for l in self._lines))
    else:
      with paths.open(self.path, "a") as f:
        f.write(line + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))
      self._tb.flush()
      self._mirror_events()

  def _mirror_events(self) -> None:
    """gs:// workdirs: copies the staged event files to <workdir>/tensorboard."""
    if self._tb_stage is None:
      return
    for name in paths.listdir(self._tb_stage):
      paths.copy(paths.join(self._tb_stage, name), paths.join(self._tb_dir, name))

  def close(self) -> None:
    """Flushes and closes the TensorBoard events file (again: a no-op)."""
    if self._tb is not None:
      tb, self._tb = self._tb, None
      cleanup.forget(self)
      tb.close()
      self._mirror_events()


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def to_py(v):
  """numpy / jax scalars and arrays -> Python numbers and lists (JSON-ready)."""
  jax = sys.modules.get("jax")  # a jax.Array exists only once jax is imported
  if isinstance(v, (np.generic, np.ndarray)) or (jax is not None and isinstance(v, jax.Array)):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()
  return v


def format_duration(seconds: float) -> str:
  """Seconds -> "3m05s" or "1h02m" (ETAs, elapsed times)."""
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, num_steps: int, m: dict, eta_s: float) -> str:
  """One stdout line: step, loss, MLM acc, NSP acc, lr, grad norm, seq/s, MFU, ETA."""
  line = (f"step {step}/{num_steps} | loss {m['loss']:.4f} | mlm_acc {m['mlm_accuracy']:.3f}"
          f" | nsp_acc {m['nsp_accuracy']:.3f} | lr {m['learning_rate']:.2e}"
          f" | gnorm {m['grad_norm']:.2f}")
  if "seq_per_s" in m:
    mfu = f"{100 * m['mfu']:.1f}%" if "mfu" in m else "n/a"
    line += (f" | {m['seq_per_s']:.1f} seq/s | {m['tflops_per_device']:.3g} TFLOP/s/dev"
             f" | MFU {mfu} | ETA {format_duration(eta_s)}")
  return line


def _process_index() -> int:
  """jax.process_index(), without importing JAX where nothing else has (data preparation
  and the input pipeline stay JAX-free: its import is a second of start-up per process)."""
  jax = sys.modules.get("jax")
  return jax.process_index() if jax is not None else 0


def log(msg: str) -> None:
  """Prints on process 0 only (one line per run, not one per host)."""
  if _process_index() == 0:
    print(msg, flush=True)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table (floats to 4 decimals) for logs and the README."""
  cells = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
  line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
  return "\n".join([line(header), "-+-".join("-" * w for w in widths)] +
                   [line(r) for r in cells])
