"""`python -m bert_jax.main`: wrong overrides fail fast with one clear line; task dispatch;
the plot command.

The override tests run the real command in a subprocess (8 fake CPU devices) and check
the exit status, that stderr is one line naming the key and the fix, and the time: the
CPU time of the failing process stays under 5 s (it fails before building or compiling
anything; its wall time is printed, and depends on how busy the machine is).
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time
import types

import pytest

from bert_jax import main as main_lib
from bert_jax.tools import plot
from bert_jax import config as config_lib
from bert_jax.config import ConfigError
from _xla import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(tmp_path, *overrides, config="configs/tiny.py"):
  env = dict(os.environ, XLA_FLAGS=xla_flags(8),
             JAX_PLATFORMS="cpu")
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", f"--config={config}",
       f"--workdir={tmp_path / 'run'}", *overrides],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  wall = time.time() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  print(f"{overrides}: rc={proc.returncode} wall {wall:.2f}s cpu {cpu:.2f}s")
  return proc, cpu


BAD_OVERRIDES = [
    # (override, words the one-line message must contain)
    ("--config.train.batch_sise=64",
     ["--config.train.batch_sise", "unknown config key", "--config.train.batch_size"]),
    ("--config.trian.batch_size=64", ["--config.trian", "unknown", "--config.train"]),
    ("--config.train.batch_size=many",
     ["--config.train.batch_size=many", "int", "--config.train.batch_size=32"]),
    ("--config.train.learning_rate=fast", ["--config.train.learning_rate", "float"]),
    ("--config.mesh.shape=(3,1,1)",
     ["config.mesh.shape=(3, 1, 1)", "8 available devices", "--config.mesh.shape="]),
    ("--config.train.batch_size=36",
     ["config.train.batch_size=36", "8 data-parallel devices", "multiple of 8"]),
    ("--config.task=pretrian", ["config.task='pretrian'", "pretrain", "glue"]),
    ("--config.data.max_seq_length=512", ["config.data.max_seq_length=512",
                                          "max_position_embeddings=128"]),
    ("--config.train.nsp_loss_weight=-1", ["config.train.nsp_loss_weight=-1", ">= 0",
                                           "0: MLM only"]),
]


@pytest.mark.parametrize("override,words", BAD_OVERRIDES, ids=[b[0] for b in BAD_OVERRIDES])
def test_wrong_override_fails_fast_with_one_clear_line(tmp_path, override, words):
  proc, cpu = run_main(tmp_path, override)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("bert_jax.main: error:")]
  assert len(lines) == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  for w in words:
    assert w in lines[0], (w, lines[0])
  assert cpu < 5.0, f"took {cpu:.1f}s of CPU to fail"
  assert not (tmp_path / "run").exists()  # nothing written, nothing started


@pytest.mark.parametrize("config,override,words", [
    ("configs/large_phase2.py", "--config.train.batch_size=256",
     ["config.init_checkpoint must be set", "--config.init_checkpoint="]),
    ("configs/tiny.py", "--config.init_checkpoint=/nonexistent/run",
     ["config.init_checkpoint=/nonexistent/run", "no such file"]),
])
def test_missing_or_wrong_init_checkpoint_fails_fast(tmp_path, config, override, words):
  proc, cpu = run_main(tmp_path, override, config=config)
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = [l for l in proc.stderr.splitlines() if l.startswith("bert_jax.main: error:")][0]
  assert all(w in line for w in words), line
  assert cpu < 5.0


def test_dispatch_to_finetuning_task(monkeypatch, tmp_path):
  calls = []
  fake = types.ModuleType("bert_jax.tasks.swag")
  fake.run = lambda config, workdir: calls.append((config.task, workdir)) or {"ok": 1}
  monkeypatch.setitem(sys.modules, "bert_jax.tasks.swag", fake)
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  config.task = "swag"
  assert main_lib.run(config, str(tmp_path)) == {"ok": 1}
  assert calls == [("swag", str(tmp_path))]


def test_dispatch_pretrain_checks_then_trains(monkeypatch, tmp_path):
  from bert_jax import train
  calls = []
  monkeypatch.setattr(train, "train_and_evaluate",
                      lambda c, w, **kw: calls.append(w) or "done")
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  handler = signal.getsignal(signal.SIGTERM)  # run() installs the SIGTERM checkpoint hook
  try:
    assert main_lib.run(config, str(tmp_path)) == "done" and calls == [str(tmp_path)]
  finally:
    signal.signal(signal.SIGTERM, handler)
  config.train.grad_accum_steps = 3  # 32 is not divisible by 3: caught before training
  with pytest.raises(ConfigError, match="grad_accum_steps=3"):
    main_lib.run(config, str(tmp_path))
  assert len(calls) == 1


def test_plot_writes_png_from_metrics(tmp_path):
  records = [{"step": s, "train/loss": 10 - s / 10, "train/mlm_accuracy": s / 100,
              "train/learning_rate": 1e-4} for s in range(10, 110, 10)]
  records.append({"step": 100, "eval/loss": 1.5, "eval/mlm_accuracy": 0.9})
  (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  series = plot.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert series["train/loss"][0] == (10, 9.0) and series["eval/loss"] == [(100, 1.5)]
  proc = subprocess.run([sys.executable, "-m", "bert_jax.tools.plot", f"--workdir={tmp_path}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  png = (tmp_path / "curves.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  with pytest.raises(ValueError, match="none of the metrics"):
    plot.plot(series, ["nonexistent"], str(tmp_path / "x.png"))


def run_front(tmp_path, front, *args):
  env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", f"bert_jax.{front}", *args],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("front,override,words", [
    ("glue", "--config.glue.tsk=mrpc", ["--config.glue.tsk", "unknown config key",
                                         "--config.glue.task"]),
    ("squad", "--config.squad.version=three", ["bert_jax.squad: error:",
                                                "config.squad.version='three'", "'2.0'"]),
    ("swag", "--config.train.batch_size=many", ["--config.train.batch_size=many", "int"]),
])
def test_finetuning_fronts_share_the_start_up(tmp_path, front, override, words):
  """python -m bert_jax.glue/.squad/.swag: the task's config by default (from any
  directory), main's flags and its one-line errors under the front's name."""
  proc = run_front(tmp_path, front, f"--workdir={tmp_path / 'run'}", override)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith(f"bert_jax.{front}: error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  for w in words:
    assert w in lines[0], (w, lines[0])
  assert not (tmp_path / "run").exists()


def test_front_refuses_another_tasks_config(tmp_path):
  proc = run_front(tmp_path, "glue", f"--config={REPO}/configs/swag.py",
                   f"--workdir={tmp_path / 'run'}")
  assert proc.returncode == 2
  line = [l for l in proc.stderr.splitlines() if l.startswith("bert_jax.glue: error:")][0]
  assert "config.task='swag'" in line and "configs/glue.py" in line, line


def test_glue_front_summarizes_finished_runs(tmp_path):
  for task, acc in (("mrpc", 0.8), ("rte", 0.6)):
    d = tmp_path / task
    d.mkdir()
    best = {"dev/accuracy": acc, "dev/f1": acc} if task == "mrpc" else {"dev/accuracy": acc}
    (d / "results.json").write_text(json.dumps(
        {"task": task, "score": acc, "best": best, "learning_rate": 2e-5, "seed": 0}))
  proc = run_front(tmp_path, "glue", f"--summarize={tmp_path / 'mrpc'},{tmp_path / 'rte'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "GLUE score 70.00" in proc.stdout, proc.stdout  # mean of 80 and 60
  proc = run_front(tmp_path, "glue", f"--summarize={tmp_path / 'nothing'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "bert_jax.glue: error: no results.json under" in proc.stderr
