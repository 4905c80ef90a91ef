"""Fine-tuning survives preemption (issue 18): SIGTERM and SIGKILL in real CLI processes,
then a rerun of the same command, end with the dev metrics, predictions and params of an
uninterrupted run, bit for bit; a sweep interrupted in its second run ends with the same
table; a rerun with another config is refused naming the key; test-set prediction resumes.

Every run is `python tests/test_finetune_resume.py --config=... --workdir=...`: this file
run as a program is `python -m bert_jax.main` with one fault installed through the
library's seams (the library never imports it), chosen by $FT_FAULT:
  sigterm@S[#K]  SIGTERM to itself just before the K-th (default 1st) time this process
                 computes step S: the loop finishes that step, checkpoints it, exits 0;
  sigkill@S[#K]  waits until the checkpoints written so far are complete, then SIGKILLs
                 itself just before step S: the steps after the last checkpoint are lost;
  sigkill_predict@B  the same just before the B-th batch of the test-set prediction
                 after training ($FT_PREDICT_CHUNK_ROWS: rows per partial file).
The model is 1 layer, H=32 (dropout on, so the dropout RNG must resume too), on the
tests/fixtures data and the MiniLM vocabulary; one device; XLA's optimisations off and a
persistent compilation cache shared by every run of the module (XLA:CPU compiles the
same programs to the same code, so cached runs are bit-identical to compiled ones).
GLUE MRPC (classification) and STS-B (regression) run as one two-task command, so one
process chain interrupts each of them in turn: SIGTERM and SIGKILL for both, and for
SQuAD v2.0 and SWAG. The chains run concurrently.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import types

if __name__ != "__main__":
  import numpy as np
  import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
ENV_FAULT = "FT_FAULT"
ENV_REFERENCES = "FT_REFERENCES"  # [[args, workdir], ...]: run them all in this process
ENV_CHUNK_ROWS = "FT_PREDICT_CHUNK_ROWS"  # prediction.PREDICT_CHUNK_ROWS for this process
TIMEOUT_S = 900


# ---------------------------------------------------------------------------------------
# The program: bert_jax.main with a fault
# ---------------------------------------------------------------------------------------

def _install_fault(spec: str) -> None:
  """Wraps finetune's compiled train step (and remembers the checkpointer) per `spec`."""
  import jax
  from bert_jax import checkpoints, finetune, prediction
  kind, at = spec.split("@")
  step_at, _, nth = at.partition("#")
  step_at, nth = int(step_at), int(nth or 1)
  live, seen = [], [0]
  init = checkpoints.FinetuneCheckpointer.__init__

  def init_and_keep(self, *args, **kwargs):
    init(self, *args, **kwargs)
    live.append(self)
  checkpoints.FinetuneCheckpointer.__init__ = init_and_keep
  compile_steps = finetune.compile_checked_steps
  if os.environ.get(ENV_CHUNK_ROWS):
    prediction.PREDICT_CHUNK_ROWS = int(os.environ[ENV_CHUNK_ROWS])
  if kind == "sigkill_predict":  # the step_at-th batch of the test-set prediction
    predict_resumable = finetune.predict_resumable

    def predict_and_die(predict_fn, *args, **kwargs):
      def fn(params, batch):
        seen[0] += 1
        if seen[0] == step_at:
          live[-1].wait()
          print(f"fault injection: SIGKILL before test batch {step_at}", flush=True)
          os.kill(os.getpid(), signal.SIGKILL)
        return predict_fn(params, batch)
      return predict_resumable(fn, *args, **kwargs)
    finetune.predict_resumable = predict_and_die
    return

  def compile_and_wrap(*args, **kwargs):
    train_step, predict_fn = compile_steps(*args, **kwargs)

    def step(state, batch):
      s = int(jax.device_get(state.step)) + 1  # the step this call computes
      if s == step_at:
        seen[0] += 1
        if seen[0] == nth:
          if kind == "sigterm":
            print(f"fault injection: SIGTERM before step {s}", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
          else:
            live[-1].wait()  # the checkpoints before this step are complete
            print(f"fault injection: SIGKILL before step {s}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
      return train_step(state, batch)
    return step, predict_fn
  finetune.compile_checked_steps = compile_and_wrap


def _run_references(runs: list[list]) -> None:
  """The uninterrupted reference runs, one after another in this one process: each
  config parsed as the CLI parses it (launch.tpu.load_config), run by bert_jax.main.run
  (the CLI's dispatch) on the same device and flags as the CLI runs."""
  from launch import tpu
  from bert_jax import main
  for args, workdir in runs:
    main.run(tpu.load_config(args[0].split("=", 1)[1], args[1:]), workdir)


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  if os.environ.get(ENV_REFERENCES):
    _run_references(json.loads(os.environ[ENV_REFERENCES]))
    sys.exit(0)
  if os.environ.get(ENV_FAULT) or os.environ.get(ENV_CHUNK_ROWS):
    _install_fault(os.environ.get(ENV_FAULT) or "none@0")
  from bert_jax import main
  main.start()
  sys.exit(0)


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------

from _xla import xla_flags  # noqa: E402  (tests/ is on sys.path under pytest)

TINY = ("--config.model.num_layers=1", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.model.intermediate_size=64",
        "--config.model.max_position_embeddings=64", "--config.data.max_seq_length=64",
        "--config.finetune.bucket_multiple=64", "--config.finetune.checkpoint_every=3",
        "--config.train.log_every=2")


def _vocab() -> str:
  from conftest import minilm_dir
  return os.path.join(minilm_dir(), "vocab.txt")


def glue_args(**kw) -> list[str]:
  """MRPC (64 train rows: 4 steps/epoch) then STS-B (40 rows: 3 steps/epoch), 2 epochs."""
  args = ["--config=configs/glue.py", f"--config.vocab_file={_vocab()}", *TINY,
          f"--config.glue.data_dir={FIX / 'glue'}", "--config.glue.task=mrpc,stsb",
          "--config.train.batch_size=16", "--config.train.learning_rate=1e-3",
          "--config.finetune.num_epochs=2", "--config.finetune.eval_batch_size=16"]
  return args + [f"--config.{k}={v}" for k, v in kw.items()]


def mrpc_args() -> list[str]:
  return [a for a in glue_args() if not a.startswith("--config.glue.task=")] + [
      "--config.glue.task=mrpc"]


def sweep_args() -> list[str]:
  return ["--config=configs/glue.py", f"--config.vocab_file={_vocab()}", *TINY,
          f"--config.glue.data_dir={FIX / 'glue'}", "--config.glue.task=mrpc",
          "--config.train.batch_size=16", "--config.finetune.max_steps=6",
          "--config.finetune.eval_batch_size=16", "--config.finetune.sweep=True",
          "--config.finetune.sweep_learning_rates=(1e-3,1e-4)",
          "--config.finetune.sweep_seeds=(0,)"]


def squad_args() -> list[str]:
  """39 v2.0 questions -> windows of 64 tokens, batch 16; 7 steps."""
  return ["--config=configs/squad.py", f"--config.vocab_file={_vocab()}", *TINY,
          "--config.squad.version=2.0", "--config.squad.doc_stride=24",
          "--config.squad.max_query_length=16",
          f"--config.squad.train_file={FIX / 'squad' / 'train-v2.0-sample.json'}",
          f"--config.squad.dev_file={FIX / 'squad' / 'dev-v2.0-sample.json'}",
          f"--config.squad.predict_file={FIX / 'squad' / 'dev-v2.0-sample.json'}",
          "--config.train.batch_size=16", "--config.train.learning_rate=3e-3",
          "--config.finetune.max_steps=7", "--config.finetune.eval_batch_size=32",
          "--config.train.eval_every=4"]


def swag_args() -> list[str]:
  """10 SWAG rows, batch 4: 3 steps/epoch, 3 epochs."""
  files = [FIX / "swag" / f for f in ("train.csv", "val.csv", "test.csv")]
  return ["--config=configs/swag.py", f"--config.vocab_file={_vocab()}", *TINY,
          *(f"--config.swag.{k}={f}" for k, f in zip(("train_file", "dev_file", "test_file"),
                                                      files)),
          "--config.train.batch_size=4", "--config.train.learning_rate=3e-3",
          "--config.finetune.num_epochs=3", "--config.finetune.eval_batch_size=8"]


class Chain:
  """Runs one command into one workdir again and again (each with its fault), in the
  background: the chains of the module run side by side. A stage given as a tuple of
  faults runs that many processes together, joined by jax.distributed (gloo on
  localhost), one device each; `devices` is each single process's device count."""

  def __init__(self, root: pathlib.Path, name: str, args: list[str], faults: list,
               env: dict | None = None, devices: int = 1):
    self.root, self.name, self.args, self.faults = root, name, args, list(faults)
    self.workdir = root / name
    self.env = env or {}
    self.devices = devices
    self.procs: list[list[tuple[subprocess.Popen, pathlib.Path]]] = []
    self.returncodes: list = []
    self._start_next()

  def _start_next(self) -> None:
    i = len(self.procs)
    stage = self.faults[i]
    hosts = stage if isinstance(stage, tuple) else (stage,)
    port = _free_port() if len(hosts) > 1 else None
    procs = []
    for h, fault in enumerate(hosts):
      env = {k: v for k, v in os.environ.items()
             if not k.startswith(("BERT_JAX_", "JAX_", "TPU_", "FT_"))}
      env.update({"XLA_FLAGS": xla_flags(1 if port else self.devices), "JAX_PLATFORMS": "cpu",
                  "JAX_COMPILATION_CACHE_DIR": str(self.root / "jax_cache"),
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
                  "JAX_DISABLE_MOST_OPTIMIZATIONS": "true", "PYTHONUNBUFFERED": "1",
                  "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                  "BERT_JAX_HUGEPAGES": "0", **self.env})
      if fault:
        env[ENV_FAULT] = fault
      flags = ([f"--coordinator_address=localhost:{port}", f"--num_processes={len(hosts)}",
                f"--process_id={h}"] if port else [])
      log = self.root / f"{self.name}.{i}{f'.p{h}' if port else ''}.log"
      workdir = [f"--workdir={self.workdir}"] if self.args else []
      with open(log, "w") as f:
        procs.append((subprocess.Popen([sys.executable, __file__, *self.args, *workdir, *flags],
                                       cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env),
                      log))
    self.procs.append(procs)

  def poll(self) -> bool:
    """Advances the chain; True once every run has ended."""
    procs = self.procs[-1]
    if any(p.poll() is None for p, _ in procs):
      return False
    codes = [p.returncode for p, _ in procs]
    self.returncodes.append(codes[0] if len(codes) == 1 else tuple(codes))
    if len(self.procs) < len(self.faults):
      self._start_next()
      return False
    return True

  def log(self, i: int, host: int = 0) -> str:
    return self.procs[i][host][1].read_text()

  def describe(self) -> str:
    return "\n".join(f"--- {self.name} run {i} host {h} (fault {self.faults[i]}, rc "
                     f"{self.returncodes[i] if i < len(self.returncodes) else '?'}):\n"
                     + self.log(i, h)[-3000:] for i in range(len(self.procs))
                     for h in range(len(self.procs[i])))


def _free_port() -> int:
  import socket
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
  """Every CLI run of the module, side by side: the uninterrupted references and the
  interrupted-then-rerun chains."""
  import time
  root = tmp_path_factory.mktemp("ft_resume")
  refs = {"glue_ref": glue_args(), "squad_ref": squad_args(), "swag_ref": swag_args(),
          "sweep_ref": sweep_args()}
  specs = {
      # SIGTERM before step 2: MRPC stops mid-epoch 1; the rerun finishes it, then STS-B
      # stops at its step 2; the third run finishes STS-B.
      "glue_sigterm": (glue_args(), ["sigterm@2", "sigterm@2", None]),
      # SIGKILL before step 6 (MRPC: after the checkpoint of step 4, its epoch-1 eval;
      # STS-B: after that of step 3, its epoch-1 eval): steps 5 (and 4) are lost. The
      # rerun computes MRPC's step 6 again: STS-B's is the 2nd step 6 of that process.
      "glue_sigkill": (glue_args(), ["sigkill@6", "sigkill@6#2", None]),
      # SIGTERM before step 5 (after the eval of step 4); the rerun finishes training and
      # is killed in the predict_file pass after 2 of its 5 batches (one per partial file).
      "squad_sigterm": (squad_args(), ["sigterm@5", "sigkill_predict@3", None]),
      "swag_sigterm": (swag_args(), ["sigterm@4", None]),
      # SIGKILL right after a checkpoint: SQuAD before step 6 (checkpoints of steps 3 and
      # 4, the evaluation of step 4 in the latter), SWAG before step 5 (checkpoint and
      # evaluation of epoch 1's end, step 3): the steps since are lost, nothing else.
      "squad_sigkill": (squad_args(), ["sigkill@6", None]),
      "swag_sigkill": (swag_args(), ["sigkill@5", None]),
      # SIGKILL in the second run (lr 1e-4) before its step 5: the first run is finished.
      "sweep_sigkill": (sweep_args(), ["sigkill@5#2", None]),
      # Two hosts (one device each), SIGTERM to host 0 only before step 2; resumed by one
      # process with two devices (the same global mesh). Every checkpoint kept: the test
      # reads the one the hosts stopped at.
      "multihost_sigterm": (mrpc_args() + ["--config.finetune.keep_checkpoints=10"],
                            [("sigterm@2", None), None]),
  }
  out = {name: Chain(root, name, args, faults, devices=2 if "multihost" in name else 1,
                     env={ENV_CHUNK_ROWS: "32"} if name == "squad_sigterm" else None)
         for name, (args, faults) in specs.items()}
  references = Chain(root, "references", [], [None], env={ENV_REFERENCES: json.dumps(
      [[args, str(root / name)] for name, args in refs.items()])})
  out["references"] = references
  for name in refs:  # each reference's own workdir, the one process's return code
    out[name] = types.SimpleNamespace(workdir=root / name, returncodes=references.returncodes,
                                      describe=references.describe)
  pending, deadline = {n for n, c in out.items() if isinstance(c, Chain)}, time.time() + TIMEOUT_S
  while pending:
    assert time.time() < deadline, "\n".join(out[n].describe() for n in pending)
    pending = {n for n in pending if not out[n].poll()}
    time.sleep(0.2)
  return out


# ---------------------------------------------------------------------------------------
# What a run left behind
# ---------------------------------------------------------------------------------------

def read_params(path: pathlib.Path, subtree: str | None = None) -> dict:
  """An orbax params (or train state's params) item as numpy arrays."""
  import jax
  import orbax.checkpoint as ocp
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  if subtree:
    tree = {subtree: tree[subtree]}
  args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  out = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=tree, restore_args=args,
                                                         partial_restore=bool(subtree)))
  return out[subtree] if subtree else out


def flat(tree) -> dict[str, np.ndarray]:
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_params(a: dict, b: dict) -> None:
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys() and fa
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def final_step_params(workdir: pathlib.Path) -> dict:
  ckpts = workdir / "checkpoints"
  last = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  return read_params(ckpts / str(last) / "state", "params")


def metric_records(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(got: pathlib.Path, ref: pathlib.Path, files: list[str]) -> None:
  """Dev metrics (every evaluation), the best step, params (best and final), prediction
  files and logged train losses of `got` equal `ref`'s, bit for bit; each step is
  logged once."""
  r_got = json.loads((got / "results.json").read_text())
  r_ref = json.loads((ref / "results.json").read_text())
  for k in ("history", "best", "best_step", "score", "num_steps", "skipped_steps"):
    assert r_got[k] == r_ref[k], k
  assert_same_params(read_params(got / "best" / "params"), read_params(ref / "best" / "params"))
  assert_same_params(final_step_params(got), final_step_params(ref))
  for f in files:
    assert (got / f).read_bytes() == (ref / f).read_bytes(), f
  drop = ("train/examples_per_sec",)
  strip = lambda recs: [{k: v for k, v in r.items() if k not in drop} for r in recs]
  got_m, ref_m = strip(metric_records(got)), strip(metric_records(ref))
  assert got_m == ref_m  # each step once, with the same values
  assert not (got / "predict_partial").exists()
  # A bounded number of checkpoints: the latest finetune.keep_checkpoints (2) + the best.
  steps = sorted(int(p.name) for p in (got / "checkpoints").iterdir() if p.name.isdigit())
  assert r_got["best_step"] in steps and steps[-1] == r_got["num_steps"] and len(steps) <= 3


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------

GLUE_FILES = {"mrpc": ["predictions/MRPC-dev.tsv", "../submission/MRPC.tsv"],
              "stsb": ["predictions/STS-B-dev.tsv", "../submission/STS-B.tsv"]}


@pytest.mark.parametrize("task", ["mrpc", "stsb"])
def test_glue_sigterm_mid_epoch_then_rerun_equals_uninterrupted(chains, task):
  c, ref = chains["glue_sigterm"], chains["glue_ref"]
  assert c.returncodes == [0, 0, 0] and ref.returncodes == [0], c.describe()
  i = 0 if task == "mrpc" else 1  # the run that was stopped in this task
  log = c.log(i)
  assert "fault injection: SIGTERM before step 2" in log
  assert f"preempted: stopping at step 2; checkpoint {c.workdir / task / 'checkpoints'}/2" in log
  assert f"resumed from {c.workdir / task / 'checkpoints'}/2: epoch 0, batch 2" in c.log(i + 1)
  assert_same_run(c.workdir / task, ref.workdir / task, GLUE_FILES[task])
  if task == "stsb":  # the GLUE table at the end: the same scores
    got = json.loads((c.workdir / "glue_summary.json").read_text())
    want = json.loads((ref.workdir / "glue_summary.json").read_text())
    assert got == want


@pytest.mark.parametrize("task,last_ckpt", [("mrpc", 4), ("stsb", 3)])
def test_glue_sigkill_after_a_checkpoint_then_rerun_equals_uninterrupted(chains, task,
                                                                         last_ckpt):
  """Killed after the checkpoint of the epoch-1 evaluation (MRPC: step 4 of 4 per epoch;
  STS-B: step 3 of 3) and one or two steps more."""
  c, ref = chains["glue_sigkill"], chains["glue_ref"]
  assert c.returncodes == [-signal.SIGKILL, -signal.SIGKILL, 0], c.describe()
  i = 0 if task == "mrpc" else 1
  assert "fault injection: SIGKILL before step 6" in c.log(i)
  # The epoch-1 evaluation (and its best params) was in that checkpoint: not lost.
  resumed = c.log(i + 1)
  assert (f"resumed from {c.workdir / task / 'checkpoints'}/{last_ckpt}: epoch 0, batch "
          f"{last_ckpt} of it, 1 evaluation(s) done, best so far at step {last_ckpt}") in resumed
  assert_same_run(c.workdir / task, ref.workdir / task, GLUE_FILES[task])


def test_squad_v2_sigterm_then_kill_in_prediction_then_rerun_equals_uninterrupted(chains):
  c, ref = chains["squad_sigterm"], chains["squad_ref"]
  assert c.returncodes == [0, -signal.SIGKILL, 0] and ref.returncodes == [0], c.describe()
  assert "preempted: stopping at step 5" in c.log(0)
  assert "1 evaluation(s) done, best so far at step 4" in c.log(1)  # eval_every=4
  assert "fault injection: SIGKILL before test batch 3" in c.log(1)
  # Training had finished: the last run only predicted the 3 batches left.
  last = c.log(2)
  assert f"resumed from {c.workdir / 'checkpoints'}/7" in last
  assert not any(l.startswith(("step ", "eval step")) for l in last.splitlines())
  assert "resumed prediction: 2 of 5 chunks were already in" in last
  assert_same_run(c.workdir, ref.workdir, [
      "predictions/predictions.json", "predictions/null_odds.json",
      "predictions/nbest_predictions.json", "eval_results.json",
      "submission/predictions.json", "submission/null_odds.json",
      "submission/nbest_predictions.json"])


def test_swag_sigterm_then_rerun_equals_uninterrupted(chains):
  c, ref = chains["swag_sigterm"], chains["swag_ref"]
  assert c.returncodes == [0, 0] and ref.returncodes == [0], c.describe()
  assert "preempted: stopping at step 4" in c.log(0)
  assert "resumed from" in c.log(1) and "epoch 1, batch 1 of it" in c.log(1)
  assert_same_run(c.workdir, ref.workdir, ["predictions/dev_predictions.csv",
                                           "submission/test_predictions.csv"])


@pytest.mark.parametrize("name,files", [
    ("squad", ["predictions/predictions.json", "predictions/null_odds.json",
               "predictions/nbest_predictions.json", "eval_results.json",
               "submission/predictions.json", "submission/null_odds.json"]),
    ("swag", ["predictions/dev_predictions.csv", "submission/test_predictions.csv"])])
def test_squad_and_swag_sigkill_after_a_checkpoint_then_rerun_equals_uninterrupted(
    chains, name, files):
  c, ref = chains[f"{name}_sigkill"], chains[f"{name}_ref"]
  assert c.returncodes == [-signal.SIGKILL, 0] and ref.returncodes == [0], c.describe()
  killed_before = 6 if name == "squad" else 5
  assert f"fault injection: SIGKILL before step {killed_before}" in c.log(0)
  resumed = c.log(1)
  last = 4 if name == "squad" else 3
  assert f"resumed from {c.workdir / 'checkpoints'}/{last}" in resumed, resumed[-3000:]
  assert "1 evaluation(s) done" in resumed  # the evaluation before the kill was kept
  assert_same_run(c.workdir, ref.workdir, files)


def test_sweep_killed_in_its_second_run_ends_with_the_same_table(chains):
  c, ref = chains["sweep_sigkill"], chains["sweep_ref"]
  assert c.returncodes == [-signal.SIGKILL, 0] and ref.returncodes == [0], c.describe()
  rerun = c.log(1)
  assert "mrpc: finished earlier in" in rerun and "lr0.001_seed0" in rerun
  assert f"resumed from {c.workdir / 'lr0.0001_seed0' / 'checkpoints'}/4" in rerun
  got = json.loads((c.workdir / "sweep.json").read_text())
  want = json.loads((ref.workdir / "sweep.json").read_text())
  no_time = lambda t: [l.rsplit(" | ", 1)[0] for l in t.splitlines()]  # train time column
  assert no_time(got["table"]) == no_time(want["table"])
  assert [r["history"] for r in got["runs"]] == [r["history"] for r in want["runs"]]
  for run in ("lr0.001_seed0", "lr0.0001_seed0"):
    assert_same_run(c.workdir / run, ref.workdir / run, ["predictions/MRPC-dev.tsv"])
  assert ((c.workdir / "submission" / "MRPC.tsv").read_bytes()
          == (ref.workdir / "submission" / "MRPC.tsv").read_bytes())


def test_multihost_sigterm_stops_every_host_at_one_step(chains):
  """SIGTERM to host 0 of 2: JAX's preemption sync manager tells host 1, orbax's
  reached_preemption turns True on both at the same step, both checkpoint it (each its
  data file) and exit 0; one process on the same 2-device mesh resumes it to the end."""
  c = chains["multihost_sigterm"]
  assert c.returncodes == [(0, 0), 0], c.describe()
  host0 = c.log(0, 0)
  assert "fault injection: SIGTERM before step 2" in host0
  stopped = int(host0.split("preempted: stopping at step ")[1].split(";")[0])
  data = c.workdir / "checkpoints" / str(stopped) / "data"
  assert sorted(p.name for p in data.glob("process_*")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
  states = [json.loads((data / f"process_{i}-of-2.json").read_text()) for i in range(2)]
  timeless = [{k: v for k, v in st.items() if not k.endswith("_seconds")} for st in states]
  assert timeless[0] == timeless[1] and states[0]["position"] == stopped
  assert f"resumed from {c.workdir / 'checkpoints'}/{stopped}: epoch 0, batch {stopped}" \
      in c.log(1)
  results = json.loads((c.workdir / "results.json").read_text())
  assert [h["step"] for h in results["history"]] == [4, 8] and results["resumed_from"] == stopped


def _config(args: list[str]):
  """The ConfigDict the CLI builds from args (config file + --config.KEY=VALUE)."""
  from launch import tpu
  return tpu.load_config(args[0].split("=", 1)[1], args[1:])


def test_rerun_with_another_config_is_refused_naming_the_key(chains):
  from bert_jax import finetune
  from bert_jax.tasks import glue, swag
  # A finished run (results.json) and an interrupted one (a checkpoint): both refuse.
  c = _config(glue_args())
  c.train.learning_rate = 2e-3
  c.train.log_every = 1  # harmless: not named
  with pytest.raises(finetune.FinetuneError,
                     match=r"holds a finished run with another config \(train.learning_rate: "
                           r"0.001 there, 0.002 now\)\. .*--config.finetune.overwrite=True"):
    glue.run(c, str(chains["glue_ref"].workdir))
  s = _config(swag_args())
  s.finetune.num_epochs = 4.0
  s.train.log_every = 1
  work = chains["swag_sigterm"].workdir
  (work / "results.json").rename(work / "results.moved")  # as if still interrupted
  try:
    with pytest.raises(finetune.FinetuneError,
                       match=r"holds a run checkpointed at step \d+ with another config "
                             r"\(finetune.num_epochs: 3.0 there, 4.0 now\)"):
      swag.run(s, str(work))
  finally:
    (work / "results.moved").rename(work / "results.json")


def test_test_set_prediction_resumes_from_its_partial_files(tmp_path, monkeypatch):
  """GLUE/SWAG test sets: finished chunks of outputs are kept; a rerun after a crash
  predicts only the rest and returns what one uninterrupted pass returns."""
  import jax
  import ml_collections
  from bert_jax import finetune, partitioning, prediction
  rng = np.random.default_rng(0)
  n, s = 37, 16
  lengths = rng.integers(3, s + 1, n)
  mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
  feats = {"input_ids": mask * rng.integers(1, 100, (n, s)).astype(np.int32),
           "token_type_ids": np.zeros((n, s), np.int32), "attention_mask": mask}
  mesh = partitioning.make_mesh(ml_collections.ConfigDict(
      {"axes": ("data", "fsdp", "tensor"), "shape": (1, 1, 1)}), jax.devices()[:1])
  calls = []

  def predict_fn(params, batch):  # a deterministic stand-in for the model
    calls.append(1)
    x = np.asarray(batch["input_ids"], np.float32)
    return (x.sum(-1, keepdims=True) * params, x[:, :2])

  monkeypatch.setattr(prediction, "PREDICT_CHUNK_ROWS", 8)  # 2 batches of 4 per chunk
  ref = finetune.predict(predict_fn, 0.5, feats, 4, mesh, 8)
  calls.clear()
  partial = str(tmp_path / "partial")

  def crash_after(k):
    def fn(p, b):
      if len(calls) >= k:
        raise RuntimeError("simulated crash")
      return predict_fn(p, b)
    return fn

  with pytest.raises(RuntimeError, match="simulated crash"):
    finetune.predict_resumable(crash_after(5), 0.5, feats, 4, mesh, 8,
                               finetune.MODEL_INPUTS, partial, key="k1")
  assert sorted(os.listdir(partial)) == ["chunk_000000.npz", "chunk_000001.npz", "key.json"]
  calls.clear()
  out = finetune.predict_resumable(predict_fn, 0.5, feats, 4, mesh, 8,
                                   finetune.MODEL_INPUTS, partial, key="k1")
  assert len(calls) == 10 - 4  # 10 batches of 4 rows; 2 chunks of 2 were on disk
  for a, b in zip(out, ref):
    np.testing.assert_array_equal(a, b)
  calls.clear()  # other params (key): nothing is reused
  finetune.predict_resumable(predict_fn, 0.5, feats, 4, mesh, 8, finetune.MODEL_INPUTS,
                             partial, key="k2")
  assert len(calls) == 10


def test_config_differences_name_what_changes_the_run(tmp_path):
  """What counts as another run: everything but logging, checkpoint cadence, outputs, the
  sweep grid, post-training test files and the mesh."""
  from bert_jax import finetune, reruns
  from bert_jax.tasks import glue
  c = _config(glue_args())
  task = glue.make_task(c, "mrpc")
  saved = finetune.run_record(c, task)
  assert saved["glue"]["task"] == "mrpc"  # this run's task, not the command's list
  c.train.log_every = 7
  c.finetune.checkpoint_every = 5
  c.finetune.sweep_learning_rates = (1.0,)
  c.mesh.shape = (1, -1, 1)
  assert finetune.config_differences(saved, finetune.run_record(c, task)) == (
      [], ["finetune.checkpoint_every", "finetune.sweep_learning_rates", "mesh.shape",
           "train.log_every"])
  c.seed = 3
  c.model.dropout_rate = 0.0
  refused, _ = finetune.config_differences(saved, finetune.run_record(c, task))
  assert refused == ["model.dropout_rate", "seed"]
  # finetune.overwrite: the earlier run's files go, prediction files stay.
  for name in ("checkpoints/4/state", "best/params", "tensorboard", "predictions"):
    (tmp_path / name).mkdir(parents=True)
  for name in ("results.json", "metrics.jsonl", "predictions/MRPC-dev.tsv"):
    (tmp_path / name).write_text("{}")
  reruns.clear_run(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]
