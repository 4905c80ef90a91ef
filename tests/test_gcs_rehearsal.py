"""The Cloud TPU pod journey with only gs:// paths, against a real GCS-protocol server.

tests/_gcs.py starts gcp-storage-emulator (HTTP, the JSON API gcsfs and tensorstore
speak); every command below is the README's pod command (docs/tpu.md, "A pod run end
to end") with the bucket's name and the tiny model's sizes changed, run as a subprocess
whose working directory is an empty local folder that must stay empty:

1. `bert_jax.tools.create_pretraining_data`: corpus and vocabulary in the bucket ->
   ArrayRecord shards + metadata.json (sizes, sha256) in the bucket;
2. `bert_jax.main` on 2 processes x 4 CPU devices (jax.distributed on localhost, as a
   2-host slice): each host stages the shards to its local cache, checkpoints go to the
   bucket; SIGTERM mid-run -> both hosts checkpoint the same step and exit 0;
3. the same command again: it resumes from the bucket's checkpoint and finishes; the
   bucket then holds the finished steps with orbax's commit markers, metrics.jsonl with
   each step once, TensorBoard events;
4. GLUE fine-tuning from that run (init_checkpoint = the bucket workdir), data and
   submission in the bucket; 5. export of the run to the bucket.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import _gcs
from _reliability import free_port, make_env

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "bert_jax" / "resources" / "corpus" / "train-sherlock-holmes.txt"
VOCAB = REPO / "bert_jax" / "resources" / "vocab.txt"
BUCKET = "bert-rehearsal"
GS = f"gs://{BUCKET}"
STEPS = 12
MODEL = ("--config.model.num_layers=1", "--config.model.hidden_size=64",
         "--config.model.intermediate_size=128", "--config.data.max_seq_length=32",
         "--config.data.max_predictions_per_seq=5", "--config.train.batch_size=16",
         "--config.train.warmup_steps=1", "--config.train.log_every=1",
         "--config.train.eval_steps=0")
GLUE = REPO / "tests" / "fixtures" / "glue"
FINETUNE = ("--config.data.max_seq_length=32", "--config.train.batch_size=8",
            "--config.finetune.max_steps=2", "--config.finetune.max_train_examples=16",
            "--config.finetune.eval_batch_size=8", "--config.train.log_every=1")
# The journey's commands: docs/tpu.md's, bucket and sizes aside (test_docs_... checks).
PREPARE = ("-m", "bert_jax.tools.create_pretraining_data",
           f"--input_file={GS}/corpus/*.txt", f"--vocab_file={GS}/vocab.txt",
           f"--output_dir={GS}/shards", "--max_seq_length=32", "--dupe_factor=1",
           "--max_predictions_per_seq=5", "--num_workers=1")
GLUE_RUN = ("-m", "bert_jax.glue", f"--config.init_checkpoint={GS}/run",
            "--config.glue.task=mrpc", f"--config.glue.data_dir={GS}/glue",
            f"--workdir={GS}/mrpc", *FINETUNE)
EXPORT = ("-m", "bert_jax.tools.export", f"--workdir={GS}/mrpc", f"--output_dir={GS}/export")
PRETRAIN = ("-m", "bert_jax.main", f"--config={REPO / 'configs' / 'tiny.py'}",
            f"--workdir={GS}/run", f"--config.data.train_files={GS}/shards",
            f"--config.vocab_file={GS}/vocab.txt", f"--config.train.num_steps={STEPS}",
            "--config.train.checkpoint_every=4", *MODEL)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  root = tmp_path_factory.mktemp("gcs")
  with _gcs.emulator(BUCKET, root / "emulator.log") as url:
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    fs = _gcs.filesystem(url)
    cwd = root / "cwd"  # every command runs here; nothing may appear in it
    cwd.mkdir()
    env = {**_gcs.client_env(url), "PYTHONPATH": str(REPO),
           "BERT_JAX_CACHE_DIR": str(root / "host_cache")}
    yield type("Gcs", (), dict(url=url, fs=fs, cwd=cwd, env=env, root=root,
                               jax_cache=root / "jax_cache"))


def _cmd(gcs, args, *, devices=1, extra_env=None, name="cmd") -> subprocess.Popen:
  env = make_env(gcs.jax_cache, devices, {**gcs.env, **(extra_env or {})})
  out = open(gcs.root / f"{name}.out", "w")
  err = open(gcs.root / f"{name}.err", "w")
  p = subprocess.Popen([sys.executable, *args], cwd=gcs.cwd, env=env, stdout=out, stderr=err)
  p.name = name
  return p


def _text(gcs, name, stream="out") -> str:
  return (gcs.root / f"{name}.{stream}").read_text()


def _wait(gcs, p, timeout=900) -> str:
  try:
    rc = p.wait(timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    rc = "timeout"
  out, err = _text(gcs, p.name), _text(gcs, p.name, "err")
  assert rc == 0, f"{p.name}: rc={rc}\n{out[-3000:]}\n{err[-5000:]}"
  return out


def _pretrain(gcs, name):
  port = free_port()
  return [_cmd(gcs, (*PRETRAIN, f"--coordinator_address=localhost:{port}",
                     "--num_processes=2", f"--process_id={i}"), devices=4,
               name=f"{name}_p{i}")
          for i in range(2)]


def _wait_for(gcs, p, pattern, timeout=600):
  import time
  deadline = time.time() + timeout
  while time.time() < deadline:
    m = re.search(pattern, _text(gcs, p.name), re.M)
    if m:
      return m
    assert p.poll() is None, f"{p.name} exited early:\n{_text(gcs, p.name)}\n" \
                             f"{_text(gcs, p.name, 'err')[-4000:]}"
    time.sleep(0.2)
  raise AssertionError(f"{p.name}: no {pattern!r}")


def _steps(gcs, prefix) -> dict[int, set[str]]:
  """{step: names in the step directory} of finished orbax steps under gs://prefix."""
  out = {}
  gcs.fs.invalidate_cache()  # listings change under the test's client
  for d in gcs.fs.ls(f"{BUCKET}/{prefix}"):
    name = d.rstrip("/").rsplit("/", 1)[-1]
    if name.isdigit():
      out[int(name)] = {x.rstrip("/").rsplit("/", 1)[-1] for x in gcs.fs.ls(d)}
  return out


def test_pod_journey_on_a_bucket(gcs):
  fs = gcs.fs
  fs.pipe(f"{BUCKET}/corpus/{CORPUS.name}", CORPUS.read_bytes())
  fs.pipe(f"{BUCKET}/vocab.txt", VOCAB.read_bytes())

  # 1. shards from the bucket's corpus into the bucket.
  p = _cmd(gcs, PREPARE, name="prepare")
  _wait(gcs, p)
  meta = json.loads(fs.cat(f"{BUCKET}/shards/metadata.json"))
  assert meta["num_instances"] > 0 and meta["shards"]
  for s in meta["shards"]:
    assert fs.size(f"{BUCKET}/shards/{s['file']}") == s["bytes"]
    assert len(s["sha256"]) == 64

  # 2. two hosts; SIGTERM to both once step 2 is done.
  procs = _pretrain(gcs, "pretrain")
  _wait_for(gcs, procs[0], rf"^step 2/{STEPS} ")
  for q in procs:
    q.send_signal(15)
  outs = [_wait(gcs, q) for q in procs]
  stopped = int(re.search(r"^preempted: stopping at step (\d+)", outs[0], re.M)[1])
  assert 2 <= stopped < STEPS
  steps = _steps(gcs, "run/checkpoints")
  assert max(steps) == stopped and "commit_success.txt" in steps[stopped]
  staged = list((gcs.root / "host_cache" / "shards").glob("*/pairs-*.array_record"))
  assert len(staged) == len(meta["shards"])

  # 3. the same command resumes from the bucket and finishes.
  procs = _pretrain(gcs, "resume")
  outs = [_wait(gcs, q) for q in procs]
  assert f"at step {stopped}" in outs[0]
  steps = _steps(gcs, "run/checkpoints")
  assert STEPS in steps and all("commit_success.txt" in v for v in steps.values())
  fs.invalidate_cache()
  records = [json.loads(l) for l in fs.cat(f"{BUCKET}/run/metrics.jsonl").decode().splitlines()]
  train_steps = [r["step"] for r in records if "train/loss" in r]
  assert train_steps == list(range(1, STEPS + 1)), train_steps  # each step once
  assert any("events.out.tfevents" in f for f in fs.find(f"{BUCKET}/run/tensorboard"))

  # 4. GLUE fine-tuning from the bucket's run; data, workdir and submission in the bucket.
  for f in (GLUE / "MRPC").iterdir():
    fs.pipe(f"{BUCKET}/glue/MRPC/{f.name}", f.read_bytes())
  p = _cmd(gcs, GLUE_RUN, name="glue")
  _wait(gcs, p)
  fs.invalidate_cache()
  got = {f.split(f"{BUCKET}/mrpc/", 1)[1] for f in fs.find(f"{BUCKET}/mrpc")}
  results = json.loads(fs.cat(f"{BUCKET}/mrpc/results.json"))
  assert results["num_steps"] == 2, results
  for want in ("results.json", "config.json", "metrics.jsonl", "best/config.json",
               "submission/MRPC.tsv"):
    assert want in got, sorted(got)
  assert any(f.startswith("predictions/") for f in got) and \
      any(f.startswith("tensorboard/events.out.tfevents") for f in got), sorted(got)
  submission = fs.cat(f"{BUCKET}/mrpc/submission/MRPC.tsv").decode().splitlines()
  test_rows = (GLUE / "MRPC" / "test.tsv").read_text().strip().splitlines()
  assert submission[0].split("\t") == ["index", "prediction"]
  assert len(submission) == len(test_rows)  # a header + one line per test pair

  # 5. export the fine-tuned model to the bucket.
  p = _cmd(gcs, EXPORT, name="export")
  _wait(gcs, p)
  fs.invalidate_cache()
  exported = {f.rsplit("/", 1)[1] for f in fs.find(f"{BUCKET}/export")}
  assert {"serving.json", "vocab.txt"} <= exported, exported
  spec = json.loads(fs.cat(f"{BUCKET}/export/serving.json"))
  assert spec["vocab_file"] == "vocab.txt"

  assert list(gcs.cwd.iterdir()) == []  # nothing went to the local working directory


# What the rehearsal may change in docs/tpu.md's commands: the config file (the tiny model)
# and the sizes that make it run in seconds on a CPU.
SIZE_FLAGS = {"--config", "--max_seq_length"}


def _doc_commands() -> list[list[str]]:
  """The `python -m ...` commands of docs/tpu.md's "A pod run end to end" block, $B as
  the rehearsal's bucket, line continuations joined."""
  import shlex
  text = (REPO / "docs" / "tpu.md").read_text(encoding="utf-8")
  block = text[text.index("## A pod run end to end"):].split("```bash\n", 1)[1]
  block = block.split("```", 1)[0].replace("\\\n", " ")
  return [shlex.split(line.replace("$B", GS))[1:] for line in block.splitlines()
          if line.startswith("python -m ")]


def test_docs_pod_commands_are_the_ones_the_rehearsal_runs():
  docs = _doc_commands()
  ours = {c[1]: c for c in (PREPARE, PRETRAIN, GLUE_RUN, EXPORT)}
  assert [d[1] for d in docs] == list(ours), "docs/tpu.md's journey lists other steps"
  for doc in docs:
    run = ours[doc[1]]
    for flag in doc[2:]:
      key = flag.split("=", 1)[0]
      if key in SIZE_FLAGS:
        assert any(f.startswith(key + "=") for f in run), (doc[1], key)
      else:
        assert flag in run, f"{doc[1]}: docs/tpu.md says {flag}, the rehearsal runs {run}"
