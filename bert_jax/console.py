"""What a run shows: our progress lines on the console, library logging in the workdir.

The entry points (`python -m bert_jax.main`, `bert_jax.tasks.{glue,squad,swag}`) print
their own progress lines. Everything libraries log through Python logging (orbax's
dozens of INFO lines per checkpoint, absl, jax's backend probing) goes to
`<workdir>/logs/<host>.log` at the absl verbosity (INFO by default), and to the console
only from WARNING up. Ask for the console with absl's flags: `--verbosity=0` (or `-v 0`,
INFO; 1 = DEBUG), `--logtostderr` or `--alsologtostderr`; then nothing is hidden.

C++ code writes to the process's stderr directly, past Python logging and the file. XLA's
INFO lines are off already (jax sets TF_CPP_MIN_LOG_LEVEL=1 unless the user did). What is
left is libtpu probing for a TPU on a machine that has none (the test extras install
libtpu): "Failed to find host bounds for accelerator type", "E0000 ... unexpected worker
hostname", then "Unable to initialize backend 'tpu'". `quiet_start` (in `__main__`,
before a backend starts; not when verbosity is asked for) avoids the probe: when
JAX_PLATFORMS is unset, libtpu is installed, and the machine shows no TPU -- no
/dev/accel* or /dev/vfio/<n> device, no Google accelerator on the PCI bus, no TPU_*
variable -- and no GPU, JAX_PLATFORMS defaults to "cpu", the backend JAX would end up on
anyway. A TPU VM always has those devices, so its TPU is never hidden; a JAX_PLATFORMS
the user set is never changed.
"""
from __future__ import annotations

import glob  # io: local-only (/dev, /sys probes)
import importlib.util
import logging
import os
import re
import socket
import sys
import tempfile
import threading
from typing import Mapping, MutableMapping, Sequence

from absl import logging as absl_logging

from bert_jax import paths

LOG_SUBDIR = "logs"
# absl flags that ask for library logging on the console.
_VERBOSE_FLAG = re.compile(r"^--?(v|verbosity)(=|$)|^--?(logtostderr|alsologtostderr)"
                           r"(=(?!(false|0|no)$)|$)", re.IGNORECASE)
# Variables that say nothing about whether a TPU is here: libtpu's logging, and the ones
# `import jax` / `import libtpu` set themselves on any machine.
_TPU_NEUTRAL_VARS = ("TPU_MIN_LOG_LEVEL", "TPU_STDERR_LOG_LEVEL", "TPU_LOG_DIR",
                     "TPU_VMODULE", "TPU_SKIP_MDS_QUERY", "TPU_LIBRARY_PATH")
_GOOGLE_PCI_VENDOR = "0x1ae0"
_GPU_DEVICES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def verbosity_requested(argv: Sequence[str]) -> bool:
  """True when the command line asks for library logging on the console (absl flags)."""
  for a in argv[1:]:
    if _VERBOSE_FLAG.match(a):
      return True
  return False


def tpu_may_be_present(environ: Mapping[str, str] | None = None, root: str = "/") -> bool:
  """False only when nothing on this machine looks like a TPU (see the module docstring).

  `root` is for tests (a fake /dev and /sys tree).
  """
  env = os.environ if environ is None else environ
  if "JAX_FORCE_TPU_INIT" in env or any(
      k.startswith("TPU_") and k not in _TPU_NEUTRAL_VARS for k in env):
    return True
  join = lambda *p: os.path.join(root, *p)  # noqa: E731  # io: local-only (/dev, /sys)
  if glob.glob(join("dev", "accel*")) or glob.glob(join("dev", "vfio", "[0-9]*")):  # io: local-only (/dev)
    return True
  for vendor in glob.glob(join("sys", "bus", "pci", "devices", "*", "vendor")):  # io: local-only (/sys)
    try:
      with open(vendor, encoding="ascii") as f:  # io: local-only (/sys)
        if f.read().strip() != _GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "class"), encoding="ascii") as f:  # io: local-only (/sys)
        pci_class = f.read().strip()
    except OSError:
      return True  # unreadable: assume the worst, change nothing
    # Google's storage (0x01....) and network (0x02...., gVNIC) devices are on every GCE
    # VM; anything else from Google may be an accelerator.
    if not pci_class.startswith(("0x01", "0x02")):
      return True
  return False


def _gpu_present(root: str = "/") -> bool:
  return any(os.path.exists(os.path.join(root, d.lstrip("/"))) for d in _GPU_DEVICES)  # io: local-only (/dev)


def quiet_start(argv: Sequence[str], environ: MutableMapping[str, str] | None = None,
                root: str = "/") -> dict[str, str]:
  """No libtpu probing on a machine without a TPU; call in `__main__` before jax starts a
  backend. Returns the variables it set (for tests). A no-op when verbosity is asked for.
  """
  env = os.environ if environ is None else environ
  if verbosity_requested(argv):
    return {}
  changed = {}
  if ("JAX_PLATFORMS" not in env and importlib.util.find_spec("libtpu") is not None
      and not tpu_may_be_present(env, root) and not _gpu_present(root)):
    changed["JAX_PLATFORMS"] = "cpu"
  env.update(changed)
  # An entry point whose module imported jax at the top (tasks/glue.py) reads
  # JAX_PLATFORMS too late from the environment; no backend has started yet, so the
  # config still takes it.
  if "JAX_PLATFORMS" in changed and "jax" in sys.modules and env is os.environ:
    try:
      sys.modules["jax"].config.update("jax_platforms", changed["JAX_PLATFORMS"])
    except Exception:  # pylint: disable=broad-except  (a backend already started: noisy only)
      pass
  return changed


class WorkdirLogHandler(logging.Handler):
  """Appends every log record to <workdir>/logs/<name>.log once the run made the workdir.

  It never creates the workdir itself (a run that stops before writing anything leaves no
  directory behind): records wait in memory until the workdir exists. On gs:// the file
  is written to the local temp directory and appended to <workdir>/logs/<name>.log when
  the handler closes (at exit; logging.shutdown closes every handler).
  """

  _MAX_PENDING = 10000

  def __init__(self, workdir: str, name: str):
    super().__init__()
    self.workdir = os.fspath(workdir)
    self.remote = paths.is_remote(self.workdir)
    self.path = str(paths.as_path(self.workdir) / LOG_SUBDIR / f"{name}.log")
    if self.remote:
      safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.workdir)
      self.local_path = paths.join(tempfile.gettempdir(), "bert_jax_logs", safe, f"{name}.log")
    else:
      self.local_path = self.path
    self._stream = None
    self._pending: list[str] = []
    self.setFormatter(absl_logging.PythonFormatter())

  def _open(self) -> bool:
    if not self.remote and not paths.is_dir(self.workdir):
      return False
    paths.makedirs(paths.as_path(self.local_path).parent)
    self._stream = paths.open(self.local_path, "a")  # pylint: disable=consider-using-with
    self._stream.writelines(self._pending)
    self._pending = []
    return True

  def emit(self, record: logging.LogRecord) -> None:
    try:
      line = self.format(record) + "\n"
      if self._stream is None and not self._open():
        if len(self._pending) < self._MAX_PENDING:
          self._pending.append(line)
        return
      self._stream.write(line)
      self._stream.flush()  # readable while the run goes on, complete if it crashes
    except Exception:  # pylint: disable=broad-except  (logging must not kill the run)
      self.handleError(record)

  def close(self) -> None:
    self.acquire()
    try:
      if self._stream is None and self._pending:
        try:
          self._open()  # the workdir appeared after the last record
        except OSError:
          pass
      if self._stream is not None:
        self._stream.close()
        self._stream = None
        if self.remote:
          self._copy_to_workdir()
    finally:
      self.release()
      super().close()

  def _copy_to_workdir(self) -> None:
    try:
      if not paths.as_path(self.workdir).exists():
        return
      target = paths.as_path(self.path)
      text = paths.read_text(self.local_path)
      if target.exists():
        text = target.read_text() + text
      paths.write_text(target, text)
      paths.remove(self.local_path)
    except Exception:  # pylint: disable=broad-except  (best effort at exit)
      pass


_lock = threading.Lock()
_file_handler: WorkdirLogHandler | None = None


def log_name(process_id: int | None = None) -> str:
  """<host> or <host>-<process id> (several processes on one host): the log file's name."""
  host = socket.gethostname().split(".")[0] or "host"
  if process_id is None and os.environ.get("JAX_PROCESS_ID", "").isdigit():
    process_id = int(os.environ["JAX_PROCESS_ID"])
  return host if process_id is None else f"{host}-{process_id}"


def setup(workdir: str | None, argv: Sequence[str] | None = None,
          process_id: int | None = None) -> WorkdirLogHandler | None:
  """Library logging -> the workdir's log file; the console keeps WARNING and up.

  Call in an entry point's main() after the flags are parsed. argv (default sys.argv)
  decides whether the console is quiet (verbosity_requested). Returns the file handler.
  """
  global _file_handler
  argv = sys.argv if argv is None else argv
  if not verbosity_requested(argv):
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
  with _lock:
    root = logging.getLogger()
    if _file_handler is not None:
      root.removeHandler(_file_handler)
      _file_handler.close()
      _file_handler = None
    if workdir:
      _file_handler = WorkdirLogHandler(workdir, log_name(process_id))
      root.addHandler(_file_handler)
  return _file_handler
