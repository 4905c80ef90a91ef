"""Several hosts, simulated: 2 local processes x 4 fake CPU devices vs 1 process x 8.

The processes run the real CLI with --coordinator_address/--num_processes/--process_id,
joined by jax.distributed (gloo collectives on localhost), exactly as the hosts of a pod
run it (tests/_reliability.py). Shown:
- the 2-process run has the 1-process run's losses and final params (6 steps);
- each process read only its share of every global batch: process p read rows
  [8p, 8p+8) of the batch the single process read (_faults.py read log), disjoint;
- only process 0 writes metrics/TensorBoard and prints progress; every process saves its
  own data-iterator state into the shared checkpoint;
- SIGTERM to one random host: every host stops at the same step, checkpoints it, exits 0;
  that checkpoint restores into 1 process with another mesh (fsdp 2 x tensor 4:
  resharded on restore) and continues with the 2-process run's losses and params.
"""
import random
import re

import pytest

import _reliability as R
from _numerics import EQUIV_RTOL, SEED, seed_note

STEPS = R.STEPS
RUN = R.SCHEDULE  # 6 steps, a checkpoint every 2


@pytest.fixture(scope="module")
def mh(tmp_path_factory):
  base = tmp_path_factory.mktemp("multihost")
  shared = R.session_dir(tmp_path_factory)

  class Ctx:
    root = base
    session = shared
    kw = dict(cache_dir=shared / "jax_cache", log_dir=base / "logs")
  return Ctx


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """1 process x 8 devices (tests/_reliability.py; shared with test_fault_tolerance)."""
  return R.reference_run(tmp_path_factory)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, mh):
  """2 processes x 4 devices, the same schedule; run once per session."""
  def make(wd):
    procs = R.start_multiprocess(wd, RUN, name="two", cache_dir=mh.session / "jax_cache",
                                 log_dir=mh.session / "logs",
                                 env={"BERT_JAX_READ_LOG": str(wd / "reads")})
    rcs = R.wait_all(procs)
    assert rcs == [0, 0], "\n\n".join(p.describe() for p in procs)
  wd = R.once(tmp_path_factory, "two_processes", make)
  logs = mh.session / "logs"
  return {"workdir": wd, "losses": R.losses(wd), "params": R.params(wd),
          "reads": wd / "reads",
          "stdout": [(logs / f"two_p{i}.out").read_text() for i in (0, 1)]}


def test_two_processes_train_like_one(one_process, two_processes):
  out0, _ = two_processes["stdout"]
  assert "2 host(s)" in out0 and "mesh {'data': 8" in out0
  assert sorted(two_processes["losses"]) == list(range(1, STEPS + 1))
  # float64 runs that differ in the order of the cross-host sums: EQUIV_RTOL
  # (tests/_numerics.py: float64 rounding amplified by Adam) bounds losses and params.
  for s in range(1, STEPS + 1):
    assert two_processes["losses"][s] == pytest.approx(one_process["losses"][s],
                                                      rel=EQUIV_RTOL, abs=0), s
  R.assert_trees_within(two_processes["params"], one_process["params"], EQUIV_RTOL)
  print(f"RELIABILITY | 2 processes x 4 devices vs 1 x 8 | losses "
        f"{[round(two_processes['losses'][s], 5) for s in range(1, STEPS + 1)]} equal | - | -")


def test_only_process_zero_writes_logs_and_summaries(two_processes):
  wd = two_processes["workdir"]
  out0, out1 = two_processes["stdout"]
  assert [m["step"] for m in R.metrics(wd)] == list(range(1, STEPS + 1))  # one writer
  assert len(list((wd / "tensorboard").glob("events.out.tfevents.*"))) == 1
  assert re.search(rf"^step {STEPS}/{STEPS} ", out0, re.M)
  assert not re.search(r"^(step \d|bert_jax pretrain|compiled)", out1, re.M)
  # ... while both saved their own data-iterator state into the shared checkpoint.
  for step in (2, 4, 6):
    data = wd / "checkpoints" / str(step) / "data"
    assert sorted(f.name for f in data.glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def test_each_process_reads_only_its_share(one_process, two_processes):
  one = R.read_log(one_process["reads"], 0)
  halves = [R.read_log(two_processes["reads"], p) for p in (0, 1)]
  assert all(len(r) == 16 for r in one[:STEPS])
  for b in range(STEPS):  # the global batch of step b+1
    mine, theirs = halves[0][b], halves[1][b]
    assert len(mine) == len(theirs) == 8
    assert not set(mine) & set(theirs)
    assert mine + theirs == one[b]  # process p: rows [8p, 8p+8) of the global batch
  print("RELIABILITY | per-host data | process 0 read rows 0-7, process 1 rows 8-15 of "
        "every global batch, disjoint | - | 0")


def test_preempted_two_process_checkpoint_resumes_in_one_process_on_another_mesh(
    mh, two_processes):
  print(seed_note())  # pytest shows it with a failure
  rng = random.Random(SEED)
  host, k = rng.randint(0, 1), rng.randint(1, 3)
  wd = mh.root / "preempted"
  procs = R.start_multiprocess(wd, RUN, name="preempted",
                               env={"BERT_JAX_FAULTS": "step_delay=1.0"}, **mh.kw)
  R.wait_for_line(procs[0], rf"^step {k}/{STEPS} ")
  R.sigterm(procs[host])
  assert R.wait_all(procs) == [0, 0], "\n\n".join(p.describe() for p in procs)
  stopped = int(re.search(r"^preempted: stopping at step (\d+)", procs[0].stdout(), re.M)[1])
  assert k <= stopped < STEPS, (k, stopped, host, seed_note())
  for p in procs:  # every host agreed on that step
    assert re.search(rf"Reached preemption sync point, step={stopped}\b", p.stderr())
  assert R.checkpoint_steps(wd)[-1] == stopped
  data = wd / "checkpoints" / str(stopped) / "data"
  assert len(list(data.glob("process_*-of-2.json"))) == 2

  # One process, 8 devices, mesh fsdp 2 x tensor 4 (the writer's was data 8).
  p = R.run(wd, (*RUN, "--config.mesh.shape=(1,2,4)"), name="resumed_one_process",
            **mh.kw)
  assert p.popen.returncode == 0, p.describe()
  assert f"at step {stopped}" in p.stdout() and "1 host(s)" in p.stdout()
  assert "mesh {'data': 1, 'fsdp': 2, 'tensor': 4}" in p.stdout()
  got = R.losses(wd)
  # Another mesh and host count reorder the float64 sums: EQUIV_RTOL, as above.
  for s in range(stopped + 1, STEPS + 1):
    assert got[s] == pytest.approx(two_processes["losses"][s], rel=EQUIV_RTOL, abs=0), \
        (s, seed_note())
  R.assert_trees_within(R.params(wd), two_processes["params"], EQUIV_RTOL)
  print(f"RELIABILITY | SIGTERM to host {host} of 2 after step {k} | both hosts stopped at "
        f"step {stopped}, exit 0; resumed in 1 process on mesh (1,2,4) | steps lost 0 | 0")


def test_distributed_settings_from_flags_or_env():
  from bert_jax import distributed
  assert distributed.resolve(environ={}) is None
  spec = distributed.resolve(environ={"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476",
                                      "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"})
  assert spec == distributed.ProcessSpec("10.0.0.2:8476", 4, 3)
  # Flags win over the environment.
  assert distributed.resolve("h:1", 2, 0, environ={"JAX_PROCESS_ID": "3"}).process_id == 0
  with pytest.raises(distributed.DistributedError, match="missing --num_processes"):
    distributed.resolve("h:1", None, 0, environ={})
  with pytest.raises(distributed.DistributedError, match=r"--process_id=2 is not in \[0"):
    distributed.resolve("h:1", 2, 2, environ={})
  with pytest.raises(distributed.DistributedError, match="host:port"):
    distributed.resolve("h", 2, 0, environ={})
