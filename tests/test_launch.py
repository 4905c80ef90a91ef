"""launch/: TPU slice table, --dry_run commands, quoting through two shells, worker.sh, the
resume-after-preemption loop (against a fake gcloud), clear errors, shellcheck."""
import io
import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from launch import slices, tpu  # noqa: E402

FAKE_GCLOUD = REPO / "tests" / "fixtures" / "launch" / "fake_gcloud.py"
SPACEY = "--config.data.train_files=gs://my bucket/it's shards/*"


def dry_run(argv):
  out = io.StringIO()
  rc = tpu.main([*argv, "--dry_run"], out=out)
  assert rc == 0
  return out.getvalue()


def commands(text):
  """The non-comment lines of a dry run, as argv lists."""
  return [shlex.split(line) for line in text.splitlines()
          if line and not line.startswith("#") and not line.startswith(tpu.COORDINATOR_VAR)]


def flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def remote_argv(argv):
  """The worker-side argv of an ssh command: bash bert_jax/launch/worker.sh start python..."""
  return shlex.split(flag(argv, "command"))


@pytest.mark.parametrize("acc,chips,hosts", [
    ("v2-8", 4, 1), ("v3-32", 16, 4), ("v4-8", 4, 1), ("v4-32", 16, 4), ("v4-128", 64, 16),
    ("v5p-8", 4, 1), ("v5p-16", 8, 2), ("v5litepod-8", 8, 1), ("v5litepod-16", 16, 4),
    ("v5e-256", 256, 64), ("v6e-8", 8, 1), ("v6e-64", 64, 16)])
def test_slice_hosts(acc, chips, hosts):
  info = slices.parse_accelerator_type(acc)
  assert (info.chips, info.hosts) == (chips, hosts)


@pytest.mark.parametrize("bad", ["tpu-8", "v4", "v9-8", "v4-7", "v4-36"])
def test_slice_errors(bad):
  with pytest.raises(slices.SliceError, match="accelerator_type"):
    slices.parse_accelerator_type(bad)


BASE = ["--name=bert-pod", "--zone=us-central2-b", "--config=configs/large.py",
        "--workdir=gs://bkt/large run", SPACEY, "--config.train.batch_size=1024"]


def test_up_v4_32_dry_run_all_workers_same_command():
  text = dry_run(["up", *BASE, "--accelerator_type=v4-32", "--spot"])
  assert "16 chips on 4 worker(s)" in text
  cmds = commands(text)
  create = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]]
  assert len(create) == 1
  assert flag(create[0], "accelerator-type") == "v4-32"
  assert flag(create[0], "version") == "tpu-ubuntu2204-base"
  assert "--spot" in create[0] and "--preemptible" not in create[0]
  ssh = [c for c in cmds if c[4] == "ssh"]
  # install on all, start on all, follow worker 0.
  assert [flag(c, "worker") for c in ssh] == ["all", "all", "0"]
  start = remote_argv(ssh[1])
  assert start[:8] == ["bash", "bert_jax/launch/worker.sh", "start", "python", "-m",
                       "bert_jax.main", "--config=configs/large.py",
                       "--workdir=gs://bkt/large run"]
  assert start[8:] == [SPACEY, "--config.train.batch_size=1024"]  # spaces and ' survive
  assert "--process_id" not in " ".join(start)  # TPU: JAX finds the coordinator itself
  assert "jax.distributed.initialize() finds the coordinator" in text
  assert remote_argv(ssh[2]) == ["bash", "bert_jax/launch/worker.sh", "follow"]
  assert cmds[-1][4] == "delete" and "--quiet" in cmds[-1]
  # the scp goes to every worker too.
  scp = [c for c in cmds if c[4] == "scp"]
  assert len(scp) == 1 and flag(scp[0], "worker") == "all"


def test_v4_8_single_host_and_runtime_override():
  text = dry_run(["create", "--name=b", "--zone=us-central2-b", "--accelerator_type=v4-8",
                  "--preemptible", "--runtime_version=tpu-vm-base"])
  (create,) = commands(text)
  assert "4 chips on 1 worker(s)" in text
  assert flag(create, "version") == "tpu-vm-base" and "--preemptible" in create


def test_explicit_coordinator_one_command_per_worker():
  text = dry_run(["run", *BASE, "--accelerator_type=v4-32", "--coordinator=explicit"])
  starts = [c for c in commands(text) if c[4] == "ssh" and "start" in flag(c, "command")]
  assert [flag(c, "worker") for c in starts] == ["0", "1", "2", "3"]
  remotes = [remote_argv(c) for c in starts]
  for i, r in enumerate(remotes):
    r[-3] = r[-3].replace("${COORDINATOR_IP}", "$COORDINATOR_IP")
    assert r[-3:] == ["--coordinator_address=$COORDINATOR_IP:8476", "--num_processes=4",
                      f"--process_id={i}"]
    assert r[:-3] == remotes[0][:-3]  # the same config and overrides on every worker
  assert "COORDINATOR_IP=$(gcloud compute tpus tpu-vm describe bert-pod" in text


def _fake_gcloud_bin(tmp_path, state):
  bindir = tmp_path / "bin"
  bindir.mkdir()
  gcloud = bindir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\n" + FAKE_GCLOUD.read_text())
  gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
  (tmp_path / "state.json").write_text(json.dumps(state))
  env = {"FAKE_GCLOUD_STATE": str(tmp_path / "state.json"),
         "FAKE_GCLOUD_LOG": str(tmp_path / "gcloud.jsonl"),
         "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
  return env


def _gcloud_calls(tmp_path):
  return [json.loads(line) for line in (tmp_path / "gcloud.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("override", [SPACEY, "--config.data.train_files=gs://b/my shards/*"])
def test_dry_run_is_a_shell_script_and_quoting_survives_two_shells(override, tmp_path):
  """Run the printed explicit-coordinator script with bash against a fake gcloud, then
  run the --command each worker receives with bash and a fake python: the argv python
  gets must be exactly the launcher's, spaces and quotes included."""
  base = [a if a != SPACEY else override for a in BASE]
  text = dry_run(["run", *base, "--accelerator_type=v4-32", "--coordinator=explicit"])
  env = {**os.environ, **_fake_gcloud_bin(tmp_path, {"state": "READY", "ip": "10.1.2.3",
                                                     "workdir": str(tmp_path), "runs": [
                                                         {"steps": [], "rc": 0}]})}
  subprocess.run(["bash", "-euo", "pipefail", "-c", text], env=env, check=True,
                 capture_output=True)
  calls = _gcloud_calls(tmp_path)
  assert calls[0][3] == "describe"
  starts = [c for c in calls if c[3] == "ssh" and "worker.sh start" in flag(c, "command")]
  assert len(starts) == 4
  expected = ["-m", "bert_jax.main", "--config=configs/large.py",
              "--workdir=gs://bkt/large run", override, "--config.train.batch_size=1024",
              "--coordinator_address=10.1.2.3:8476", "--num_processes=4"]
  for i, c in enumerate(starts):
    assert remote_argv(c)[4:] == expected + [f"--process_id={i}"]
  if override != SPACEY:
    return
  # The worker side: a home with the checkout's worker.sh and a venv whose python records.
  home = tmp_path / "home"
  (home / "bert_jax" / "launch").mkdir(parents=True)
  shutil.copy(REPO / "launch" / "worker.sh", home / "bert_jax" / "launch" / "worker.sh")
  venv_bin = home / "bert_jax_venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "activate").write_text(f'PATH="{venv_bin}:$PATH"\n')
  fake_python = venv_bin / "python"
  fake_python.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                         "print(json.dumps(sys.argv[1:]))\nprint(os.getcwd())\n")
  fake_python.chmod(0o755)
  worker_env = {"HOME": str(home), "PATH": os.environ["PATH"]}
  remote = flag(starts[2], "command")
  subprocess.run(["bash", "-c", remote], cwd=home, env=worker_env, check=True,
                 capture_output=True)
  follow = subprocess.run(["bash", "-c", "bash bert_jax/launch/worker.sh follow"], cwd=home,
                          env=worker_env, capture_output=True, text=True, timeout=60)
  assert follow.returncode == 0, follow.stderr
  got = json.loads(follow.stdout.splitlines()[0])
  assert got == expected + ["--process_id=2"]
  assert follow.stdout.splitlines()[1] == str(home / "bert_jax")  # runs in the checkout


def test_worker_sh_stop_forwards_sigterm_and_follow_returns_its_code(tmp_path):
  script = tmp_path / "train.py"
  script.write_text(
      "import signal, sys, time\n"
      "signal.signal(signal.SIGTERM, lambda *a: (print('checkpoint saved', flush=True),"
      " sys.exit(0)))\n"
      "print('started', flush=True)\n"
      "time.sleep(60)\nsys.exit(3)\n")
  env = {**os.environ, "BERT_JAX_RUN_DIR": str(tmp_path / "run"),
         "BERT_JAX_VENV": str(tmp_path / "novenv")}
  sh = str(REPO / "launch" / "worker.sh")
  subprocess.run(["bash", sh, "start", sys.executable, str(script)], env=env, check=True,
                 capture_output=True)
  again = subprocess.run(["bash", sh, "start", "true"], env=env, capture_output=True,
                         text=True)
  assert again.returncode == 2 and "already going" in again.stderr
  log = tmp_path / "run" / "log"
  deadline = time.monotonic() + 120  # wait until the handler is installed
  while not (log.exists() and "started" in log.read_text()):
    assert time.monotonic() < deadline, "the run did not start"
    time.sleep(0.05)
  subprocess.run(["bash", sh, "stop"], env=env, check=True, capture_output=True)
  follow = subprocess.run(["bash", sh, "follow"], env=env, capture_output=True, text=True,
                          timeout=120)
  assert follow.returncode == 0
  assert "checkpoint saved" in follow.stdout
  status = subprocess.run(["bash", sh, "status"], env=env, capture_output=True, text=True)
  assert status.stdout.strip() == "exited 0"


def _worker_sh_verb(command):
  words = shlex.split(command)
  return words[words.index("bert_jax/launch/worker.sh") + 1]


RESUME = ["resume", "--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-8",
          "--config=configs/tiny.py", "--config.train.num_steps=300",
          "--source=https://github.com/example/bert_jax.git@v1", "--retry_wait=0"]


def test_resume_recreates_after_preemption_until_final_step(tmp_path, monkeypatch):
  workdir = tmp_path / "work dir"
  env = _fake_gcloud_bin(tmp_path, {"state": None, "ip": "10.0.0.2", "workdir": str(workdir),
                                    "runs": [{"steps": [100, 200], "rc": 255, "preempt": True},
                                             {"steps": [300], "rc": 0}]})
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  out = io.StringIO()
  assert tpu.main([*RESUME, f"--workdir={workdir}"], out=out) == 0
  verbs = [c[3] if c[3] != "ssh" else _worker_sh_verb(flag(c, "command"))
           for c in _gcloud_calls(tmp_path)]
  assert verbs == [
      "describe", "create", "install", "start", "follow",  # attempt 1: preempted at 200
      "describe", "delete", "create", "install", "start", "follow",  # 2: done
      "delete"]  # 3: step 300 is in the workdir -> tear down
  text = out.getvalue()
  assert "latest checkpoint in" in text and "step 200; the run ends at step 300" in text
  clone = [c for c in _gcloud_calls(tmp_path) if c[3] == "ssh"][0]
  assert "git clone --depth=1 --branch v1 https://github.com/example/bert_jax.git bert_jax" \
      in flag(clone, "command")


def test_resume_stops_on_a_crash_without_progress(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "wd"
  (workdir / "checkpoints" / "100").mkdir(parents=True)
  env = _fake_gcloud_bin(tmp_path, {"state": "READY", "ip": "x", "workdir": str(workdir),
                                    "runs": [{"steps": [], "rc": 1}]})
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert tpu.main([*RESUME, f"--workdir={workdir}"], out=io.StringIO()) == 2
  assert "a bug, not a preemption" in capsys.readouterr().err


def test_resume_dry_run_when_complete_prints_no_work(tmp_path):
  (tmp_path / "checkpoints" / "300").mkdir(parents=True)
  text = dry_run([*RESUME, f"--workdir={tmp_path}", "--keep"])
  assert "step 300; the run ends at step 300" in text and "the run is complete" in text
  assert commands(text) == []


FINETUNE_RESUME = ["resume", "--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-8",
                   "--config=configs/glue.py", "--config.glue.task=mrpc",
                   "--source=https://github.com/example/bert_jax.git@v1", "--retry_wait=0"]


def test_resume_restarts_an_interrupted_finetuning_job_until_its_results(tmp_path, monkeypatch):
  """A fine-tuning job never writes a checkpoint of train.num_steps: it is finished once
  its results.json exists. Preempted after its checkpoint of step 2, it is relaunched
  (and resumes there), and the launcher stops as soon as results.json is written."""
  workdir = tmp_path / "mrpc run"
  env = _fake_gcloud_bin(tmp_path, {"state": None, "ip": "10.0.0.2", "workdir": str(workdir),
                                    "runs": [{"steps": [2], "rc": 255, "preempt": True},
                                             {"steps": [4], "files": ["results.json"],
                                              "rc": 0}]})
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  out = io.StringIO()
  assert tpu.main([*FINETUNE_RESUME, f"--workdir={workdir}"], out=out) == 0
  verbs = [c[3] if c[3] != "ssh" else _worker_sh_verb(flag(c, "command"))
           for c in _gcloud_calls(tmp_path)]
  assert verbs == [
      "describe", "create", "install", "start", "follow",  # attempt 1: preempted at 2
      "describe", "delete", "create", "install", "start", "follow",  # 2: results written
      "delete"]  # 3: results.json is there -> tear down, no 20 reruns
  text = out.getvalue()
  assert f"{workdir / 'results.json'} not written yet (0 finished run(s), latest checkpoint " \
         "step 2)" in text
  assert f"{workdir / 'results.json'} exists" in text and "the run is complete" in text
  start = [c for c in _gcloud_calls(tmp_path) if c[3] == "ssh"
           and _worker_sh_verb(flag(c, "command")) == "start"][0]
  assert "--config=configs/glue.py" in remote_argv(start)


def test_resume_of_a_finished_finetuning_job_does_nothing(tmp_path):
  (tmp_path / "results.json").write_text("{}")
  text = dry_run([*FINETUNE_RESUME, f"--workdir={tmp_path}", "--keep"])
  assert "results.json exists" in text and "the run is complete" in text
  assert commands(text) == []


def test_resume_stops_on_a_finetuning_crash_without_progress(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "wd"
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  env = _fake_gcloud_bin(tmp_path, {"state": "READY", "ip": "x", "workdir": str(workdir),
                                    "runs": [{"steps": [], "rc": 1}]})
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert tpu.main([*FINETUNE_RESUME, f"--workdir={workdir}"], out=io.StringIO()) == 2
  assert "a bug, not a preemption" in capsys.readouterr().err


@pytest.mark.parametrize("overrides,done", [
    ([], "results.json"),
    (["--config.finetune.sweep=True"], "sweep.json"),
    (["--config.glue.task=mrpc,rte"], "glue_summary.json"),
    (["--config.glue.task=all", "--config.finetune.sweep=True"], "glue_summary.json"),
])
def test_finetune_done_file(overrides, done):
  config = tpu.load_config("configs/glue.py", overrides)
  assert tpu.finetune_done_file(config, "gs://b/run") == f"gs://b/run/{done}"
  assert tpu.finetune_done_file(tpu.load_config("configs/tiny.py", []), "gs://b/r") is None
  squad = tpu.load_config("configs/squad.py", ["--config.squad.mode=evaluate"])
  assert tpu.finetune_done_file(squad, "gs://b/r") == "gs://b/r/eval_results.json"


def test_missing_gcloud_is_a_clear_error(monkeypatch, capsys, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud there
  rc = tpu.main(["delete", "--name=b", "--zone=z"], out=io.StringIO())
  assert rc == 2
  err = capsys.readouterr().err
  assert "gcloud not found on PATH" in err and "--dry_run" in err
  assert tpu.main(["delete", "--name=b", "--zone=z", "--dry_run"], out=io.StringIO()) == 0


@pytest.mark.parametrize("argv,needle", [
    (["run", "--name=b"], "missing --zone"),
    (["run", "--name=b", "--zone=z", "--accelerator_type=v4-8", "--config=configs/tiny.py"],
     "missing --workdir (where checkpoints and logs go"),
    (["create", "--name=b", "--zone=z"], "missing --accelerator_type"),
    (["run", "--name=b", "--zone=z", "--accelerator_type=v4-32", "--config=configs/tiny.py",
      "--workdir=/tmp/local"], "4 workers, which must all write the same checkpoints"),
    (["run", "--name=b", "--zone=z", "--accelerator_type=v4-8", "--config=configs/tiny.py",
      "--workdir=gs://b/r", "--config.train.batchsize=3"], "batchsize"),
    (["run", "--name=b", "--zone=z", "--accelerator_type=v4-8", "--config=configs/nope.py",
      "--workdir=gs://b/r"], "configs/nope.py: no such file"),
    (["create", "--name=b", "--zone=z", "--accelerator_type=v4-8", "--spot", "--preemptible"],
     "exclude each other"),
    (["delete", "--name=b", "--zone=z", "--bogus"], "unknown argument"),
])
def test_bad_flags_fail_with_a_clear_message(argv, needle, capsys):
  assert tpu.main([*argv, "--dry_run"], out=io.StringIO()) == 2
  assert needle in capsys.readouterr().err


def test_shell_scripts_pass_shellcheck():
  exe = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent / "shellcheck")
  scripts = sorted(str(p) for p in (REPO / "launch").rglob("*.sh"))
  assert len(scripts) >= 2
  result = subprocess.run([exe, "--severity=style", *scripts], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


def test_readme_dry_run_excerpt_is_current():
  readme = (REPO / "docs" / "tpu.md").read_text(encoding="utf-8")
  excerpt = readme[readme.index("`--dry_run` prints what that runs:"):].split("```\n", 2)[1]
  text = dry_run(["up", "--name=bert-base", "--zone=us-central2-b", "--accelerator_type=v4-8",
                  "--config=configs/base.py", "--workdir=gs://my-bucket/bert_base",
                  "--config.data.train_files=gs://my-bucket/shards/*",
                  "--config.vocab_file=gs://my-bucket/vocab.txt"])
  lines = [l.replace(str(REPO), "<repo>") for l in text.splitlines()
           if not l.startswith(("# dry run", "# streaming"))]
  assert excerpt.splitlines() == lines
