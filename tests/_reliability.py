"""Runs `python -m bert_jax.main` in subprocesses for the reliability tests.

tests/test_multihost.py and tests/test_fault_tolerance.py drive the real CLI (flags,
distributed init, signal handling, exit codes) on fake CPU devices: one process with 8,
or several local processes with 4 each joined by jax.distributed over gloo on localhost.
The model is tiny (1 layer, H=64) and computes in float64 (JAX_ENABLE_X64): a restart
must reproduce the uninterrupted run bit for bit, and another host layout (which only
reorders float sums) agrees within the derived bound of tests/_numerics.py, which
float32 could not give. One persistent compilation cache for the whole
session makes every run after the first of a shape skip XLA compilation, and the
reference runs both test modules compare against run once per session, even when
pytest-xdist spreads the tests over several workers (`once`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Sequence

import numpy as np

from _xla import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
# bert_jax.main with the faults of _faults.py installed (the library does not import it).
FAULTY_MAIN = pathlib.Path(__file__).resolve().parent / "_faulty_main.py"
CORPUS = REPO / "bert_jax" / "resources" / "corpus"
TIMEOUT_S = 900  # per run; the shared 2-core CI machine can be very slow

STEPS = 6
# The reference schedule of both modules: 6 steps, a checkpoint every 2.
SCHEDULE = (f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=2")
# configs/tiny.py shrunk: 1 layer, H=64, batch 16 x seq 32, log every step, no eval.
BASE_OVERRIDES = (
    "--config=configs/tiny.py",
    f"--config.data.train_files={CORPUS / 'train-sherlock-holmes.txt'}",
    "--config.model.num_layers=1",
    "--config.model.hidden_size=64",
    "--config.model.intermediate_size=128",
    "--config.data.max_seq_length=32",
    "--config.data.max_predictions_per_seq=5",
    "--config.train.batch_size=16",
    "--config.train.warmup_steps=1",
    "--config.train.log_every=1",
    "--config.train.eval_steps=0",
    "--config.train.keep_checkpoints=10",
    # float64 (with JAX_ENABLE_X64 in make_env): see the module docstring.
    "--config.model.dtype=float64",
    "--config.model.param_dtype=float64",
)


def session_dir(tmp_path_factory) -> pathlib.Path:
  """A directory every xdist worker of this pytest session shares (xdist's recipe)."""
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "reliability"
  root.mkdir(parents=True, exist_ok=True)
  return root


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def once(tmp_path_factory, name: str, make: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """make(workdir) runs once per session (whichever worker comes first); -> workdir."""
  root = session_dir(tmp_path_factory)
  wd, done = root / name, root / f"{name}.done"
  with _locked(root / f"{name}.lock"):
    if not done.exists():
      if wd.exists():  # a failed attempt of another worker
        shutil.rmtree(wd)
      make(wd)
      done.write_text("ok")
  return wd


def cli_config(*overrides: str):
  """The ConfigDict the CLI builds from BASE_OVERRIDES + overrides (for in-process checks)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("_tiny_config", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  for o in (*BASE_OVERRIDES[1:], *overrides):
    key, value = o[len("--config."):].split("=", 1)
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    old = node[leaf]
    node[leaf] = (value == "True") if isinstance(old, bool) else type(old)(value)
  return c


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def make_env(cache_dir, devices: int, extra: dict | None = None) -> dict:
  """Environment of one CLI process: `devices` fake CPU devices, shared compile cache."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("BERT_JAX_", "JAX_", "TPU_"))}
  env.update({
      "XLA_FLAGS": xla_flags(devices),
      "JAX_PLATFORMS": "cpu",
      "JAX_ENABLE_X64": "1",  # the float64 model of BASE_OVERRIDES
      "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
      # XLA's expensive passes off: the same programs in every run, compiled faster.
      "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
      "PYTHONUNBUFFERED": "1",
  })
  env.update(extra or {})
  return env


@dataclasses.dataclass
class Proc:
  """A started CLI process with its output files."""
  popen: subprocess.Popen
  out: pathlib.Path
  err: pathlib.Path

  def stdout(self) -> str:
    return self.out.read_text() if self.out.exists() else ""

  def stderr(self) -> str:
    return self.err.read_text() if self.err.exists() else ""

  def wait(self, timeout: float = TIMEOUT_S) -> int:
    try:
      return self.popen.wait(timeout)
    except subprocess.TimeoutExpired:
      self.popen.kill()
      raise AssertionError(f"timed out after {timeout}s:\n{self.stdout()}\n"
                           f"{self.stderr()[-3000:]}") from None

  def describe(self) -> str:
    return f"rc={self.popen.returncode}\nstdout:\n{self.stdout()}\nstderr tail:\n" + \
        self.stderr()[-4000:]


def start(workdir, overrides: Sequence[str], *, cache_dir, log_dir, name: str,
          devices: int = 8, env: dict | None = None, process_flags=()) -> Proc:
  log_dir = pathlib.Path(log_dir)
  log_dir.mkdir(parents=True, exist_ok=True)
  out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
  cmd = [sys.executable, str(FAULTY_MAIN), *BASE_OVERRIDES, f"--workdir={workdir}",
         *overrides, *process_flags]
  with open(out, "w") as fo, open(err, "w") as fe:
    popen = subprocess.Popen(cmd, cwd=REPO, stdout=fo, stderr=fe,
                             env=make_env(cache_dir, devices, env))
  return Proc(popen, out, err)


def run(workdir, overrides: Sequence[str] = (), **kwargs) -> Proc:
  """One process, 8 fake devices, to completion."""
  p = start(workdir, overrides, **kwargs)
  p.wait()
  return p


def start_multiprocess(workdir, overrides: Sequence[str] = (), *, num_processes: int = 2,
                       devices_per_process: int = 4, name: str, **kwargs) -> list[Proc]:
  """`num_processes` local processes joined by jax.distributed (gloo on localhost)."""
  port = free_port()
  return [start(workdir, overrides, name=f"{name}_p{i}", devices=devices_per_process,
                process_flags=(f"--coordinator_address=localhost:{port}",
                               f"--num_processes={num_processes}", f"--process_id={i}"),
                **kwargs)
          for i in range(num_processes)]


def wait_all(procs: Sequence[Proc]) -> list[int]:
  return [p.wait() for p in procs]


def wait_for_line(proc: Proc, pattern: str, timeout: float = TIMEOUT_S) -> re.Match:
  """Polls the process's stdout until a line matches `pattern` (regex)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    m = re.search(pattern, proc.stdout(), re.M)
    if m:
      return m
    if proc.popen.poll() is not None:
      raise AssertionError(f"exited before printing {pattern!r}: {proc.describe()}")
    time.sleep(0.1)
  raise AssertionError(f"no {pattern!r} within {timeout}s: {proc.describe()}")


def sigterm(proc: Proc) -> None:
  proc.popen.send_signal(signal.SIGTERM)


# ---------------------------------------------------------------------------------------
# What a run left behind.

def losses(workdir) -> dict[int, float]:
  """step -> train loss from metrics.jsonl (the last record of a step wins)."""
  out = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if "train/loss" in r:
      out[r["step"]] = r["train/loss"]
  return out


def metrics(workdir) -> list[dict]:
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text()
          .splitlines()]


def checkpoint_steps(workdir) -> list[int]:
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def unfinished_checkpoints(workdir) -> list[str]:
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(p.name for p in d.iterdir() if not p.name.isdigit()) if d.is_dir() else []


def reference_run(tmp_path_factory) -> dict:
  """1 process x 8 devices, the SCHEDULE, with a read log: the run both modules match."""
  root = session_dir(tmp_path_factory)

  def make(wd):
    p = run(wd, SCHEDULE, name="reference", env={"BERT_JAX_READ_LOG": str(wd / "reads")},
            cache_dir=root / "jax_cache", log_dir=root / "logs")
    assert p.popen.returncode == 0, p.describe()
  wd = once(tmp_path_factory, "reference", make)
  return {"workdir": wd, "losses": losses(wd), "params": params(wd), "reads": wd / "reads"}


def params(workdir, step: int | None = None) -> dict:
  """The params of a checkpoint (default: the latest) as numpy arrays."""
  import jax
  from bert_jax import checkpoints
  path = pathlib.Path(workdir) / "checkpoints" / str(step) if step else workdir
  with jax.enable_x64(True):  # a float64 model's config is valid only with x64
    return checkpoints.load_run(str(path))[1]


def _flat(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_trees_equal(a, b) -> None:
  """Bit for bit (a restart of the same program on the same devices)."""
  flat_a, flat_b = _flat(a), _flat(b)
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    assert flat_a[k].dtype == flat_b[k].dtype == np.float64, (k, flat_a[k].dtype)
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def assert_trees_within(got, ref, rtol: float) -> None:
  """Each leaf within rtol of its own scale: max |got - ref| <= rtol * max |ref|."""
  from _numerics import max_relative_error
  flat_g, flat_r = _flat(got), _flat(ref)
  assert flat_g.keys() == flat_r.keys()
  for k in flat_r:
    assert flat_r[k].dtype == np.float64, (k, flat_r[k].dtype)
    err = max_relative_error(flat_g[k], flat_r[k])
    assert err <= rtol, f"{k} differs by {err:.2e} of its scale (bound {rtol:.1e})"


def read_log(log_dir, process: int) -> list[list[int]]:
  """The record indices of each source read of one process (_faults.py read log)."""
  f = pathlib.Path(log_dir) / f"reads_process_{process}.jsonl"
  return [json.loads(l)["indices"] for l in f.read_text().splitlines()]


def one_line_error(proc: Proc) -> str:
  """The CLI's `bert_jax.main: error: ...` line (exit code 2)."""
  lines = [l for l in proc.stderr().splitlines() if l.startswith("bert_jax.main: error:")]
  assert proc.popen.returncode == 2 and len(lines) == 1, proc.describe()
  return lines[0]

