"""Faults a preemptible pod run meets, injected into the real CLI (tests/_reliability.py).

- SIGTERM at a random step: exit 0 with a checkpoint of that very step; the same command
  resumes and ends with exactly the params of an uninterrupted run (no step, no example
  lost or repeated);
- SIGKILL in the middle of a checkpoint write: the half-written step is never restored;
  the rerun resumes from the previous complete checkpoint and matches the uninterrupted run;
- a NaN batch under nan_policy=skip (update dropped and counted, training goes on) and an
  Inf batch under nan_policy=stop (one-line error naming the step and the last good
  checkpoint, which is on disk);
- bad places: unwritable, full or nearly full workdir, a checkpoint of another model, a
  config that cannot continue the run -> one-line error before anything is compiled or
  written, the existing run untouched.
The faults are tests/_faults.py (env vars), installed into the CLI by tests/_faulty_main.py.
"""
import os
import pathlib
import random
import re
import shutil
import signal

import numpy as np
import pytest

import _reliability as R
from _numerics import SEED, seed_note

STEPS = R.STEPS
SIX_STEPS = R.SCHEDULE  # 6 steps, a checkpoint every 2


@pytest.fixture(scope="module")
def ft(tmp_path_factory):
  base = tmp_path_factory.mktemp("fault_tolerance")
  shared = R.session_dir(tmp_path_factory)

  class Ctx:
    root = base
    kw = dict(cache_dir=shared / "jax_cache", log_dir=base / "logs")
  return Ctx


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: 6 steps, checkpoints at 2, 4, 6 (once per session)."""
  ref = R.reference_run(tmp_path_factory)
  assert R.checkpoint_steps(ref["workdir"]) == [2, 4, 6]
  return ref


def test_sigterm_at_a_random_step_checkpoints_it_and_resumes_exactly(ft, reference):
  print(seed_note())  # pytest shows it with a failure
  k = random.Random(SEED).randint(1, 3)  # SIGTERM once step k has been printed
  wd = ft.root / "sigterm"
  p = R.start(wd, SIX_STEPS, name="sigterm", env={"BERT_JAX_FAULTS": "step_delay=0.5"},
              **ft.kw)
  R.wait_for_line(p, rf"^step {k}/{STEPS} ")
  R.sigterm(p)
  assert p.wait() == 0, p.describe()
  stopped = int(re.search(r"^preempted: stopping at step (\d+)", p.stdout(), re.M)[1])
  assert k <= stopped < STEPS, (k, stopped, seed_note())
  assert "SIGTERM received" in p.stderr()
  assert R.checkpoint_steps(wd)[-1] == stopped  # the step it stopped at, not an older one
  assert max(R.losses(wd)) == stopped

  p2 = R.run(wd, SIX_STEPS, name="sigterm_resume", **ft.kw)
  assert p2.popen.returncode == 0, p2.describe()
  assert f"at step {stopped}" in p2.stdout()
  got = R.losses(wd)
  # Exact: the same program on the same 8 devices, from a bit-exact restore.
  for s in range(1, STEPS + 1):
    assert got[s] == reference["losses"][s], (s, seed_note())
  R.assert_trees_equal(R.params(wd), reference["params"])
  print(f"RELIABILITY | SIGTERM at step {k} (random) | exit 0, checkpoint of step {stopped} "
        f"| steps lost 0 | params == uninterrupted")


def test_sigkill_in_the_middle_of_a_save_restores_the_previous_checkpoint(ft, reference):
  wd = ft.root / "sigkill"
  p = R.run(wd, SIX_STEPS, name="sigkill", env={"BERT_JAX_FAULTS": "kill_in_save@4"},
            **ft.kw)
  assert p.popen.returncode == -signal.SIGKILL, p.describe()
  assert "SIGKILL while saving step 4" in p.stderr()
  reached = max(R.losses(wd))
  # Step 4 was half written (its tmp directory is there), and is not a checkpoint.
  assert R.checkpoint_steps(wd) == [2]
  assert any(n.startswith("4.orbax-checkpoint-tmp") for n in R.unfinished_checkpoints(wd))

  p2 = R.run(wd, SIX_STEPS, name="sigkill_resume", **ft.kw)
  assert p2.popen.returncode == 0, p2.describe()
  assert "at step 2" in p2.stdout()
  assert R.unfinished_checkpoints(wd) == []  # the torn save was cleaned up
  assert R.checkpoint_steps(wd) == [2, 4, 6]
  R.assert_trees_equal(R.params(wd), reference["params"])  # exact, as after SIGTERM
  for s in range(3, STEPS + 1):
    assert R.losses(wd)[s] == reference["losses"][s], s
  print(f"RELIABILITY | SIGKILL while saving step 4 (after step {reached}) | resumed from "
        f"step 2 | steps lost {reached - 2} | params == uninterrupted")


def test_nan_batch_with_skip_policy_drops_that_update_and_goes_on(ft, reference):
  wd = ft.root / "nan_skip"
  p = R.run(wd, (f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=1",
                 "--config.train.nan_policy=skip"),
            name="nan_skip", env={"BERT_JAX_FAULTS": "nan_batch@3"}, **ft.kw)
  assert p.popen.returncode == 0, p.describe()
  assert re.search(r"^step\(s\) 3: non-finite loss or gradients.*update skipped", p.stdout(),
                   re.M), p.stdout()
  by_step = {m["step"]: m for m in R.metrics(wd)}
  assert np.isnan(by_step[3]["train/loss"])
  assert [by_step[s]["train/skipped_steps"] for s in range(1, STEPS + 1)] == [0, 0, 1, 1, 1, 1]
  assert all(np.isfinite(by_step[s]["train/loss"]) for s in (1, 2, 4, 5, 6))
  # Steps 1-2 are the reference's; step 3 changed nothing; training went on after it.
  R.assert_trees_equal(R.params(wd, 2), R.params(reference["workdir"], 2))  # same batches
  R.assert_trees_equal(R.params(wd, 3), R.params(wd, 2))
  after = R.params(wd, 4)["bert"]["pooler"]["kernel"]
  assert not np.array_equal(after, R.params(wd, 3)["bert"]["pooler"]["kernel"])
  print("RELIABILITY | NaN batch at step 3, nan_policy=skip | update of step 3 dropped, "
        "counted (skipped_steps=1), run finished | steps lost 0 | 1 batch unused")


def test_inf_batch_with_stop_policy_names_the_step_and_last_good_checkpoint(ft, reference):
  wd = ft.root / "inf_stop"
  p = R.run(wd, (f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=2",
                 "--config.train.nan_policy=stop"),
            name="inf_stop", env={"BERT_JAX_FAULTS": "inf_batch@3"}, **ft.kw)
  line = R.one_line_error(p)
  assert "step 3:" in line and "nan_policy=stop" in line, line
  assert f"Last good checkpoint: step 2 in {wd / 'checkpoints'}" in line, line
  assert R.checkpoint_steps(wd) == [2]  # complete on disk, and nothing after the bad step
  assert max(R.losses(wd)) == 3
  R.assert_trees_equal(R.params(wd, 2), R.params(reference["workdir"], 2))  # same batches
  print("RELIABILITY | Inf batch at step 3, nan_policy=stop | exit 2 naming step 3 and "
        "checkpoint 2 | steps lost 1 | 0")


def _snapshot(workdir: pathlib.Path) -> dict:
  return {str(p.relative_to(workdir)): p.stat().st_mtime_ns
          for p in workdir.rglob("*") if p.is_file()}


def test_bad_places_fail_before_training_and_touch_nothing(ft, reference):
  root = ft.root / "bad_places"
  root.mkdir()
  (root / "a_file").write_text("not a directory")
  full = root / "full"
  full.mkdir()
  (full / ".bert_jax_write_probe.0").symlink_to("/dev/full")  # every write: ENOSPC
  other_model = root / "other_model"
  shutil.copytree(reference["workdir"], other_model)
  other_config = root / "other_config"
  shutil.copytree(reference["workdir"], other_config)
  before = {d: _snapshot(d) for d in (other_model, other_config)}

  cases = {  # name: (workdir, overrides, env, what the one-line error must say)
      "file_in_the_way": (root / "a_file" / "run", (), {},
                          ["is not writable: a file is in the way"]),
      "read_only_fs": (pathlib.Path("/sys/bert_jax_reliability_test"), (), {},
                       ["is not writable"]),
      "disk_full": (full, (), {}, ["is not writable: the disk is full"]),
      "nearly_full": (root / "nearly_full", (), {"BERT_JAX_FAULTS": "free_bytes=1048576"},
                      ["has 1.0 MiB free, but one checkpoint of this train state takes"]),
      "other_model": (other_model,
                      ("--config.model.hidden_size=128", "--config.model.intermediate_size=256"),
                      {}, ["holds a checkpoint of a different model (checkpoint step 6)",
                           "config.model.hidden_size=64 there, 128 now",
                           "--config.model.hidden_size=64", "new --workdir"]),
      "other_config": (other_config, ("--config.train.batch_size=32",), {},
                       ["holds a run that this config cannot continue (checkpoint step 6)",
                        "config.train.batch_size=16 there, 32 now",
                        "--config.train.batch_size=16"]),
  }
  if os.geteuid() != 0:  # root writes through permission bits
    locked = root / "locked"
    locked.mkdir(mode=0o555)
    cases["permission_denied"] = (locked, (), {}, ["is not writable: permission denied"])
  procs = {name: R.start(wd, (f"--config.train.num_steps={STEPS}", *ov), name=name,
                         env=env, **ft.kw)
           for name, (wd, ov, env, _) in cases.items()}
  for name, proc in procs.items():
    proc.wait()
    line = R.one_line_error(proc)
    for expected in cases[name][3]:
      assert expected in line, (name, line)
    assert "compiled train step" not in proc.stdout(), name
  for d, snap in before.items():
    assert _snapshot(d) == snap, f"{d} was modified"
  assert not (full / "checkpoints").exists()
  print("RELIABILITY | bad places: " + ", ".join(cases) + " | one-line error before "
        "compiling, exit 2, existing run untouched | - | 0")


# ---------------------------------------------------------------------------------------
# In-process units of the same modules (cheap, no subprocess).

def test_config_changes_classifies_resume_safety():
  from bert_jax import preflight
  from bert_jax.config import default_config
  saved = default_config().to_dict()
  c = default_config()
  c.train.num_steps = 5  # continue longer: noted
  c.mesh.shape = (1, 8, 1)  # another mesh: resharded, not even noted
  c.train.log_every = 7
  bad, noted = preflight.config_changes(saved, c)
  assert bad == [] and [n[0] for n in noted] == ["train.num_steps"]
  c.model.scan_layers = not c.model.scan_layers
  c.seed = 3
  bad, _ = preflight.config_changes(saved, c)
  assert [b[0] for b in bad] == ["seed", "model.scan_layers"]


def test_shape_check_catches_a_checkpoint_without_its_config(ft, reference, tmp_path):
  """The parameter shapes are compared even when the saved config item is gone."""
  import jax
  from bert_jax import optim, partitioning, preflight, train_lib
  from bert_jax.tasks import pretrain
  wd = tmp_path / "run"
  shutil.copytree(reference["workdir"], wd)
  for step in R.checkpoint_steps(wd):
    shutil.rmtree(wd / "checkpoints" / str(step) / "config")
  c = R.cli_config("--config.model.num_layers=2")
  mesh = partitioning.make_mesh(c.mesh)
  abstract = lambda: train_lib.abstract_train_state(
      pretrain.make_init_fn(pretrain.make_model(c), c), optim.make_optimizer(c.train), mesh, 0)[0]
  with jax.enable_x64(True):  # the runs' float64 model (tests/_reliability.py)
    # One subtree per layer: the second layer's parameters are missing from the checkpoint.
    with pytest.raises(preflight.WorkdirError, match=r"parameter bert\.encoder\.layer_1\..* has "
                       r"shape absent there, \(\d+,.*\) in this config"):
      preflight.check_resume(c, wd, wd / "checkpoints", abstract)
    c.model.num_layers = 1
    assert preflight.check_resume(c, wd, wd / "checkpoints", abstract) is None
  assert jax.device_count() == 8


def test_health_bad_steps_and_fault_specs():
  import _faults as fault_injection
  from bert_jax import health
  m = [{"skipped_steps": s, "loss": 1.0, "grad_norm": 1.0} for s in (2, 2, 3, 3, 5)]
  assert health.bad_steps(m, first_step=11, skipped_before=2) == [13, 15]
  f = fault_injection.parse("nan_batch@3, kill_in_save@4,step_delay=0.25,free_bytes=10")
  assert (f.nan_batch, f.kill_in_save, f.step_delay, f.free_bytes) == (3, 4, 0.25, 10)
  with pytest.raises(fault_injection.FaultSpecError, match="nan_batch@STEP"):
    fault_injection.parse("nan@3")


def test_a_checkpoint_write_on_a_full_disk_becomes_one_clear_error():
  """What Checkpointer.save/wait raise when orbax's async write hits ENOSPC mid-run."""
  from bert_jax import checkpoints, preflight
  orbax_error = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/10.'
                           'orbax-checkpoint-tmp/state/_sharding": Failed to write 13189 bytes '
                           "to file 14: No space left on device [os_error_code='28']")
  e = checkpoints.write_failure(orbax_error, "/w/checkpoints", 8, keep=3)
  assert isinstance(e, preflight.WorkdirError)
  assert "the disk is full" in str(e) and "last complete checkpoint is step 8" in str(e)
  assert "--config.train.keep_checkpoints=3" in str(e)
  assert checkpoints.write_failure(ValueError("permission denied"), "/w", 8, keep=3) is None
