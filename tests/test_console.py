"""The console shows our progress lines; library logging goes to <workdir>/logs/ (console.py).

The end-to-end test runs `python -m bert_jax.main` on a shrunken configs/tiny.py in a
subprocess with JAX_PLATFORMS unset, as a user would (with libtpu installed, as the test
extras install it, JAX would otherwise probe for a TPU and print libtpu's errors), once
quiet and once with --verbosity=0.
"""
import logging
import os
import re
import subprocess
import sys

import pytest

from bert_jax import console
from _xla import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_TEXT = os.path.join(REPO, "bert_jax", "resources", "corpus", "eval-*.txt")

# What other libraries print when they are let onto the console: absl/glog-format INFO
# lines (orbax: "I1203 23:40:43.059 ... checkpoint_manager.py:701] ..."), Python logging's
# default "INFO:name:..." form, and libtpu probing for a TPU that is not there.
FOREIGN = re.compile(r"^I\d{4} |INFO:|Failed to find host bounds|unexpected worker hostname|"
                     r"Unable to initialize backend|Logging before InitGoogle|"
                     r"TPU_ACCELERATOR_TYPE")
ORBAX_INFO = re.compile(r"^I\d{4} .*checkpoint_manager\.py:\d+\]", re.MULTILINE)

# configs/tiny.py at 1 layer, H=32, 4 steps of 8 sequences, the held-out text as training
# data (pairs in a second), a checkpoint every 2 steps: the orbax INFO lines of 2 saves.
MICRO = ["--config.model.num_layers=1", "--config.model.hidden_size=32",
         "--config.model.num_heads=4", "--config.model.intermediate_size=64",
         "--config.model.max_position_embeddings=64", "--config.data.max_seq_length=32",
         "--config.data.max_predictions_per_seq=5", f"--config.data.train_files={EVAL_TEXT}",
         "--config.train.batch_size=8", "--config.train.num_steps=4",
         "--config.train.warmup_steps=1", "--config.train.log_every=2",
         "--config.train.eval_every=4", "--config.train.eval_steps=1",
         "--config.train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{'quiet': ..., 'verbose': ...} -> (CompletedProcess, workdir); both run at once."""
  root = tmp_path_factory.mktemp("console")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env.update(XLA_FLAGS=xla_flags(1), JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # compile fast
  procs = {}
  for name, extra in (("quiet", []), ("verbose", ["--verbosity=0"])):
    workdir = root / name
    cmd = [sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
           f"--workdir={workdir}", *MICRO, *extra]
    procs[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True), workdir)
  out = {}
  for name, (p, workdir) in procs.items():
    stdout, _ = p.communicate(timeout=600)
    out[name] = (subprocess.CompletedProcess(p.args, p.returncode, stdout), workdir)
    print(f"--- {name}: exit {p.returncode}, {len(stdout.splitlines())} console lines")
  return out


def test_console_holds_our_lines_and_no_library_info(runs):
  proc, workdir = runs["quiet"]
  assert proc.returncode == 0, proc.stdout[-4000:]
  lines = proc.stdout.splitlines()
  foreign = [l for l in lines if FOREIGN.search(l)]
  assert not foreign, f"{len(foreign)} library lines on the console, e.g. {foreign[:5]}"
  assert any(l.startswith("step 4/4 |") for l in lines), proc.stdout
  assert any(l.startswith("done: step 4") for l in lines), proc.stdout
  # ... and the library lines are in the log file: orbax's INFO for both saves.
  logs = list((workdir / "logs").glob("*.log"))
  assert len(logs) == 1, logs
  text = logs[0].read_text()
  assert len(ORBAX_INFO.findall(text)) >= 2, text[:2000]
  assert "paired 1 text file(s)" in text  # our own INFO line too


def test_verbosity_brings_library_logging_back_to_the_console(runs):
  proc, workdir = runs["verbose"]
  assert proc.returncode == 0, proc.stdout[-4000:]
  assert ORBAX_INFO.search(proc.stdout), proc.stdout[-4000:]
  assert ORBAX_INFO.search(next((workdir / "logs").glob("*.log")).read_text())


# ---------------------------------------------------------------------------------------
# The pieces, without a run.

@pytest.mark.parametrize("argv, asked", [
    ([], False), (["--config=c.py", "--workdir=w"], False),
    (["--verbosity=0"], True), (["--verbosity", "1"], True), (["-v", "0"], True),
    (["-v=1"], True), (["--v=1"], True), (["--logtostderr"], True),
    (["--alsologtostderr=true"], True), (["--alsologtostderr=false"], False),
    (["--vocab=x"], False), (["--config.verbosity=1"], False),
])
def test_verbosity_requested(argv, asked):
  assert console.verbosity_requested(["prog", *argv]) is asked


def _fake_machine(root, devices=(), pci=()):
  for d in devices:
    path = root / d.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
  for i, (vendor, pci_class) in enumerate(pci):
    d = root / "sys" / "bus" / "pci" / "devices" / f"0000:00:0{i}.0"
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(pci_class + "\n")
  return str(root)


@pytest.mark.parametrize("devices, pci, env, present", [
    ((), (), {}, False),  # a laptop or CI VM
    ((), [("0x1ae0", "0x020000"), ("0x1ae0", "0x010802"), ("0x8086", "0x120000")], {},
     False),  # a GCE CPU VM: Google's gVNIC and NVMe, someone else's accelerator
    (("/dev/accel0",), (), {}, True),  # TPU v2-v4 VM
    (("/dev/vfio/0",), (), {}, True),  # TPU v5e/v5p/v6e VM
    ((), [("0x1ae0", "0x120000")], {}, True),  # a Google accelerator on the PCI bus
    ((), (), {"TPU_ACCELERATOR_TYPE": "v4-8"}, True),
    ((), (), {"JAX_FORCE_TPU_INIT": "1"}, True),
    ((), (), {"TPU_STDERR_LOG_LEVEL": "0"}, False),  # libtpu's logging says nothing
])
def test_tpu_may_be_present(tmp_path, devices, pci, env, present):
  assert console.tpu_may_be_present(env, _fake_machine(tmp_path, devices, pci)) is present


def test_quiet_start_defaults_only_what_the_user_left_unset(tmp_path):
  import importlib.util
  libtpu = importlib.util.find_spec("libtpu") is not None
  cpu_vm = _fake_machine(tmp_path / "cpu")
  env = {}
  console.quiet_start(["prog"], env, root=cpu_vm)
  assert env == ({"JAX_PLATFORMS": "cpu"} if libtpu else {})
  # What `import jax` sets on any machine is no sign of a TPU.
  env = {"TPU_LIBRARY_PATH": "/x/libtpu.so", "TPU_SKIP_MDS_QUERY": "1"}
  console.quiet_start(["prog"], env, root=cpu_vm)
  assert env.get("JAX_PLATFORMS") == ("cpu" if libtpu else None)
  # The user's own setting stays; asking for verbosity changes nothing.
  env = {"JAX_PLATFORMS": "tpu,cpu"}
  assert console.quiet_start(["prog"], env, root=cpu_vm) == {} and env["JAX_PLATFORMS"] == "tpu,cpu"
  env = {}
  assert console.quiet_start(["prog", "--verbosity=0"], env, root=cpu_vm) == {} and not env
  # A TPU or GPU machine keeps JAX's own platform choice.
  for machine in (_fake_machine(tmp_path / "tpu", ["/dev/vfio/0"]),
                  _fake_machine(tmp_path / "gpu", ["/dev/nvidiactl"])):
    env = {}
    console.quiet_start(["prog"], env, root=machine)
    assert "JAX_PLATFORMS" not in env


def test_log_file_waits_for_the_workdir_and_never_creates_it(tmp_path):
  workdir = tmp_path / "run"
  handler = console.WorkdirLogHandler(str(workdir), "host")
  log = logging.getLogger("test_console.waits")
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  try:
    log.info("before the workdir")
    assert not workdir.exists()
    workdir.mkdir()
    log.info("after")
    text = (workdir / "logs" / "host.log").read_text()
    assert "before the workdir" in text and "after" in text
    assert re.match(r"I\d{4} ", text)  # absl's format, as on the console
  finally:
    log.removeHandler(handler)
    handler.close()
  gone = tmp_path / "never"
  handler = console.WorkdirLogHandler(str(gone), "host")
  log.addHandler(handler)
  try:
    log.info("nowhere to go")
  finally:
    log.removeHandler(handler)
    handler.close()
  assert not gone.exists()
