"""Run bert_jax on a Cloud TPU VM or pod slice: create, install, run, follow, resume, delete.

  python -m launch.tpu up --name=bert --zone=us-central2-b --accelerator_type=v4-32 \\
      --spot --config=configs/large.py --workdir=gs://my-bucket/large \\
      --config.data.train_files='gs://my-bucket/shards/*' \\
      --config.vocab_file=gs://my-bucket/vocab.txt

Every worker of the slice gets this checkout and runs the same
`python -m bert_jax.main --config=... --workdir=...` (gcloud `--worker=all`); JAX's
distributed runtime finds the other hosts by itself on TPU (`--coordinator=explicit`
passes --coordinator_address/--num_processes/--process_id instead). Worker 0's log is
streamed here. `resume` recreates a preempted slice and relaunches until the job has
finished: a pre-training workdir holds a checkpoint of the config's final step; a
fine-tuning job (config.task glue/squad/swag) has written its results file
(results.json; sweep.json for a sweep, glue_summary.json for several GLUE tasks), each
relaunch resuming from the job's own checkpoints and finished runs. Every command takes
`--dry_run`, which prints the exact commands (one per line, shell-quoted) instead of
running them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil  # io: local-only (shutil.which: programs on PATH)
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from launch import slices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # io: local-only (this checkout)
REMOTE_REPO = "bert_jax"  # relative to the worker's home directory.
REMOTE_TARBALL = "bert_jax-src.tar.gz"
WORKER_SH = f"{REMOTE_REPO}/launch/worker.sh"
COORDINATOR_VAR = "COORDINATOR_IP"
_COORDINATOR_TOKEN = "@COORDINATOR_IP@"  # shell-safe placeholder, see Runner.render.


class LaunchError(Exception):
  """A launch cannot proceed; the message says what is missing and how to fix it."""


# ---------------------------------------------------------------------------------------
# Running or printing commands
# ---------------------------------------------------------------------------------------

def _quote(value: str) -> str:
  """shlex.quote, but double quotes for a value holding single quotes and nothing that
  double quotes would expand ($ ` \\ " !): the printed commands stay readable."""
  quoted = shlex.quote(value)
  if quoted == value:
    return value.replace(_COORDINATOR_TOKEN, f'"${{{COORDINATOR_VAR}}}"')
  if "'" not in value or any(c in value for c in '$`\\"!'):
    return quoted.replace(_COORDINATOR_TOKEN, f"'\"${COORDINATOR_VAR}\"'")
  return f'"{value}"'.replace(_COORDINATOR_TOKEN, f"${{{COORDINATOR_VAR}}}")


def _quote_flag(arg: str) -> str:
  """Quoted for the shell, keeping a --flag= prefix outside the quotes for legibility."""
  flag, sep, value = arg.partition("=")
  if sep and flag.startswith("--") and shlex.quote(flag) == flag:
    return flag + sep + _quote(value)
  return _quote(arg)


class Runner:
  """Executes commands, or (dry run) prints them as a shell script would run them."""

  def __init__(self, dry_run: bool, out=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout
    self.coordinator_ip: str | None = None

  def comment(self, text: str) -> None:
    print(f"# {text}", file=self.out, flush=True)

  def render(self, argv: Sequence[str]) -> str:
    """argv -> one shell line. The coordinator placeholder (it sits inside a quoted
    --command=...) becomes an expansion of the shell variable $COORDINATOR_IP."""
    return " ".join(_quote_flag(a) for a in argv)

  def run(self, argv: Sequence[str], capture: bool = False) -> subprocess.CompletedProcess:
    """Runs argv (streaming its output unless captured); in a dry run only prints it."""
    if self.dry_run:
      print(self.render(argv), file=self.out, flush=True)
      return subprocess.CompletedProcess(list(argv), 0, "", "")
    if self.coordinator_ip is not None:
      argv = [a.replace(_COORDINATOR_TOKEN, self.coordinator_ip) for a in argv]
    print(f"+ {self.render(argv)}", file=self.out, flush=True)
    return subprocess.run(list(argv), text=True, check=False,
                          capture_output=capture)

  def check(self, argv: Sequence[str], what: str) -> subprocess.CompletedProcess:
    """Runs argv and raises LaunchError naming `what` if it fails."""
    result = self.run(argv)
    if result.returncode:
      raise LaunchError(f"{what} failed (exit {result.returncode}): {self.render(argv)}")
    return result


# ---------------------------------------------------------------------------------------
# gcloud command builders (pure: tests check their output)
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
  """The TPU VM the commands address."""
  name: str
  zone: str
  project: str = ""

  def gcloud(self, verb: str, *positional: str, flags: Sequence[str] = ()) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *positional, f"--zone={self.zone}"]
    if self.project:
      cmd.append(f"--project={self.project}")
    return cmd + list(flags)

  def ssh(self, worker: str, command: str) -> list[str]:
    return self.gcloud("ssh", self.name, flags=[f"--worker={worker}", f"--command={command}"])


def create_command(t: Target, info: slices.SliceInfo, runtime_version: str,
                   spot: bool, preemptible: bool) -> list[str]:
  flags = [f"--accelerator-type={info.accelerator_type}",
           f"--version={runtime_version or info.default_runtime}"]
  if spot:
    flags.append("--spot")
  if preemptible:
    flags.append("--preemptible")
  return t.gcloud("create", t.name, flags=flags)


def delete_command(t: Target) -> list[str]:
  return t.gcloud("delete", t.name, flags=["--quiet"])


def describe_command(t: Target, field: str = "state") -> list[str]:
  return t.gcloud("describe", t.name, flags=[f"--format=value({field})"])


def install_commands(t: Target, source: str) -> list[list[str]]:
  """Copy this checkout (or clone a git URL) to every worker and pip-install it there."""
  install = shlex.join(["bash", WORKER_SH, "install"])
  if source == "local":
    tmp = tempfile.gettempdir()
    tarball = os.path.join(tmp, f"bert_jax-src-{t.name}.tar.gz")  # io: local-only (scratch)
    return [
        ["git", "-C", REPO_ROOT, "archive", "--format=tar.gz", f"--prefix={REMOTE_REPO}/",
         "-o", tarball, "HEAD"],
        t.gcloud("scp", tarball, f"{t.name}:{REMOTE_TARBALL}", flags=["--worker=all"]),
        t.ssh("all", f"rm -rf {REMOTE_REPO} && tar xzf {REMOTE_TARBALL} && {install}"),
    ]
  url, _, ref = source.rpartition("@") if "@" in source.split("/")[-1] else (source, "", "")
  clone = ["git", "clone", "--depth=1"] + (["--branch", ref] if ref else []) + [url, REMOTE_REPO]
  return [t.ssh("all", f"rm -rf {REMOTE_REPO} && {shlex.join(clone)} && {install}")]


def train_argv(config: str, workdir: str, overrides: Sequence[str],
               extra: Sequence[str] = ()) -> list[str]:
  """The one training command every worker runs."""
  return ["python", "-m", "bert_jax.main", f"--config={config}", f"--workdir={workdir}",
          *overrides, *extra]


def start_commands(t: Target, info: slices.SliceInfo, argv: Sequence[str],
                   coordinator: str, port: int) -> list[list[str]]:
  """Start the run on every worker: one `--worker=all` command, or one per worker with
  explicit --coordinator_address/--num_processes/--process_id."""
  if coordinator == "auto":
    return [t.ssh("all", shlex.join(["bash", WORKER_SH, "start", *argv]))]
  cmds = []
  for i in range(info.hosts):
    flags = [f"--coordinator_address={_COORDINATOR_TOKEN}:{port}",
             f"--num_processes={info.hosts}", f"--process_id={i}"]
    cmds.append(t.ssh(str(i), shlex.join(["bash", WORKER_SH, "start", *argv, *flags])))
  return cmds


def follow_command(t: Target, worker: str = "0") -> list[str]:
  return t.ssh(worker, shlex.join(["bash", WORKER_SH, "follow"]))


def stop_command(t: Target) -> list[str]:
  return t.ssh("all", shlex.join(["bash", WORKER_SH, "stop"]))


# ---------------------------------------------------------------------------------------
# Checks made before anything is created
# ---------------------------------------------------------------------------------------

def require_gcloud(runner: Runner) -> None:
  if not runner.dry_run and shutil.which("gcloud") is None:  # io: local-only (a program on PATH)
    raise LaunchError(
        "gcloud not found on PATH: install the Google Cloud CLI "
        "(https://cloud.google.com/sdk/docs/install), run `gcloud auth login`, or add "
        "--dry_run to print the commands without running them.")


def repo_relative_config(config: str) -> str:
  """The config path as workers see it (relative to the checkout), checked to exist."""
  path, sep, arg = config.partition(":")
  full = os.path.abspath(path)  # io: local-only (a config file of this checkout)
  if not os.path.isfile(full):  # io: local-only (a config file of this checkout)
    raise LaunchError(f"--config={config}: no such file; pass a config of this checkout, "
                      "e.g. --config=configs/large.py.")
  rel = os.path.relpath(full, REPO_ROOT)  # io: local-only (a config file of this checkout)
  if rel.startswith(".."):
    raise LaunchError(f"--config={config} is outside the repository {REPO_ROOT}: workers "
                      "get a copy of the repository only, so put the config under configs/.")
  return rel + sep + arg


def load_config(config: str, overrides: Sequence[str]):
  """Parses the config file + overrides exactly as bert_jax.main does, so a typo fails
  here, before a slice is paid for."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  argv = ["launch", f"--config={config}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  try:
    fv(argv)
    return fv.config
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
    raise LaunchError(f"--config={config} {' '.join(overrides)}: {e}") from e


def check_workdir(workdir: str, info: slices.SliceInfo, runner: Runner) -> None:
  from bert_jax import paths  # pylint: disable=g-import-not-at-top
  if info.multi_host and not paths.is_remote(workdir):
    raise LaunchError(
        f"--workdir={workdir}: {info.accelerator_type} has {info.hosts} workers, which "
        "must all write the same checkpoints: use a bucket, e.g. --workdir=gs://BUCKET/run.")
  if not paths.is_remote(workdir):
    runner.comment(f"note: --workdir={workdir} is on the TPU VM's disk; it is lost when "
                   "the VM is deleted (use gs://BUCKET/... to keep it).")


# ---------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------

def _target(args) -> Target:
  return Target(args.name, args.zone, args.project)


def _slice(args) -> slices.SliceInfo:
  try:
    return slices.parse_accelerator_type(args.accelerator_type)
  except slices.SliceError as e:
    raise LaunchError(str(e)) from e


def _describe_slice(info: slices.SliceInfo, runner: Runner) -> None:
  runner.comment(f"{info.accelerator_type}: {info.chips} chips on {info.hosts} worker(s), "
                 f"{info.chips_per_host} chips each; runtime {info.default_runtime}")


def cmd_create(args, runner: Runner) -> int:
  info = _slice(args)
  _describe_slice(info, runner)
  runner.check(create_command(_target(args), info, args.runtime_version, args.spot,
                              args.preemptible), "creating the TPU VM")
  return 0


def cmd_install(args, runner: Runner) -> int:
  if args.source == "local" and not runner.dry_run:
    dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "-uno"],
                           capture_output=True, text=True, check=False).stdout.strip()
    if dirty:
      runner.comment("note: uncommitted changes are not sent (git archive HEAD); commit "
                     "them first to run them.")
  for cmd in install_commands(_target(args), args.source):
    runner.check(cmd, "installing bert_jax on the workers")
  return 0


def _resolve_coordinator(args, t: Target, runner: Runner) -> None:
  if args.coordinator != "explicit":
    return
  if args.coordinator_ip:
    runner.coordinator_ip = args.coordinator_ip
    if runner.dry_run:
      print(f"{COORDINATOR_VAR}={shlex.quote(args.coordinator_ip)}", file=runner.out)
    return
  describe = describe_command(t, "networkEndpoints[0].ipAddress")
  if runner.dry_run:
    runner.comment("worker 0's internal IP is the coordinator address:")
    print(f"{COORDINATOR_VAR}=$({shlex.join(describe)})", file=runner.out)
    return
  result = runner.run(describe, capture=True)
  ip = result.stdout.strip()
  if result.returncode or not ip:
    raise LaunchError(f"cannot read worker 0's IP of {t.name}: {result.stderr.strip()}")
  runner.coordinator_ip = ip


def _start(args, runner: Runner, info: slices.SliceInfo) -> None:
  t = _target(args)
  argv = train_argv(args.config, args.workdir, args.overrides)
  if info.multi_host and args.coordinator == "auto":
    runner.comment(f"{info.hosts} processes, one per worker, all running the same command; "
                   "jax.distributed.initialize() finds the coordinator on TPU by itself.")
  _resolve_coordinator(args, t, runner)
  for cmd in start_commands(t, info, argv, args.coordinator, args.coordinator_port):
    runner.check(cmd, "starting the run")


def _follow(args, runner: Runner) -> int:
  runner.comment("streaming worker 0's log until the run ends (Ctrl-C detaches; the run "
                 "goes on: `python -m launch.tpu logs ...` reattaches)")
  return runner.run(follow_command(_target(args))).returncode


def _prepare_run(args, runner: Runner) -> slices.SliceInfo:
  info = _slice(args)
  args.config = repo_relative_config(args.config)
  load_config(args.config, args.overrides)
  check_workdir(args.workdir, info, runner)
  return info


def cmd_run(args, runner: Runner) -> int:
  info = _prepare_run(args, runner)
  _describe_slice(info, runner)
  _start(args, runner, info)
  return 0 if args.detach else _follow(args, runner)


def cmd_up(args, runner: Runner) -> int:
  """create + install + run + follow, then delete (unless --keep)."""
  info = _prepare_run(args, runner)
  _describe_slice(info, runner)
  t = _target(args)
  runner.check(create_command(t, info, args.runtime_version, args.spot, args.preemptible),
               "creating the TPU VM")
  try:
    cmd_install(args, runner)
    _start(args, runner, info)
    rc = _follow(args, runner)
  finally:
    if not args.keep:
      runner.run(delete_command(t))
  return rc


def tpu_state(t: Target, runner: Runner) -> str | None:
  """READY, CREATING, PREEMPTED, ... or None when the TPU VM does not exist."""
  result = runner.run(describe_command(t), capture=True)
  if result.returncode:
    if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
      return None
    raise LaunchError(f"cannot describe {t.name}: {result.stderr.strip()}")
  return result.stdout.strip()


FINETUNE_TASKS = ("glue", "squad", "swag")  # config.task values of fine-tuning jobs


def finetune_done_file(config, workdir: str) -> str | None:
  """The file a fine-tuning job writes last (its presence: the job has finished), or None
  for pre-training. One task: results.json (finetune.RESULTS_FILE); a sweep: sweep.json;
  several GLUE tasks: glue_summary.json; SQuAD's evaluate / predict modes: the
  eval_results.json / predictions.json they write."""
  from bert_jax import paths  # pylint: disable=g-import-not-at-top
  if config.task not in FINETUNE_TASKS:
    return None
  if config.task == "glue":
    spec = str(config.glue.task).strip().lower()
    if spec == "all" or len([t for t in spec.split(",") if t.strip()]) > 1:
      return paths.join(workdir, "glue_summary.json")
  if config.task == "squad" and config.squad.mode == "evaluate":
    return paths.join(workdir, "eval_results.json")
  if config.task == "squad" and config.squad.mode == "predict":
    out = config.squad.output_dir or paths.join(
        workdir, "submission" if config.squad.predict_file else "predictions")
    return paths.join(out, "predictions.json")
  if config.finetune.sweep:
    return paths.join(workdir, "sweep.json")
  return paths.join(workdir, "results.json")


def finetune_progress(workdir: str) -> tuple:
  """What a fine-tuning job has saved so far: its finished runs (results.json files) and
  the latest checkpoint step of each run (sweeps and GLUE tasks keep one run per
  subdirectory); an attempt that changed none of it made no progress."""
  from bert_jax import paths  # pylint: disable=g-import-not-at-top
  if not paths.is_dir(workdir):
    return ((), ())
  # A run lies at depth 0 (one task), 1 (a sweep's lr*_seed* or a GLUE task's dir) or 2
  # (a GLUE task's sweep); no recursive glob: gs:// does not offer one.
  levels = ("", "*", "*/*")
  finished = tuple(f for lv in levels
                   for f in paths.glob(paths.join(workdir, lv, "results.json")))
  steps = tuple((c, paths.latest_checkpoint_step(paths.as_path(c).parent)) for lv in levels
                for c in paths.glob(paths.join(workdir, lv, "checkpoints")))
  return finished, steps


def cmd_resume(args, runner: Runner) -> int:
  """Recreate and relaunch until the job has finished: pre-training, the workdir holds
  the final step's checkpoint; fine-tuning, its results file exists."""
  from bert_jax import paths  # pylint: disable=g-import-not-at-top
  info = _prepare_run(args, runner)
  _describe_slice(info, runner)
  if not paths.is_remote(args.workdir):
    runner.comment(f"note: the loop reads --workdir={args.workdir} from this machine; on "
                   "a TPU use a bucket both see (gs://...).")
  config = load_config(args.config, args.overrides)
  done_file = finetune_done_file(config, args.workdir)
  final = int(config.train.num_steps)

  def finished() -> bool:
    if done_file is not None:
      return paths.exists(done_file)
    step = paths.latest_checkpoint_step(args.workdir)
    return step is not None and step >= final

  def progress():
    if done_file is not None:
      return finetune_progress(args.workdir)
    return paths.latest_checkpoint_step(args.workdir)

  def describe() -> str:
    if done_file is not None:
      runs, steps = finetune_progress(args.workdir)
      latest = [s for _, s in steps if s is not None]
      return (f"{done_file} {'exists' if paths.exists(done_file) else 'not written yet'} "
              f"({len(runs)} finished run(s), latest checkpoint "
              f"{'none' if not latest else f'step {max(latest)}'}); the job ends when it "
              "is written")
    step = paths.latest_checkpoint_step(args.workdir)
    return (f"latest checkpoint in {args.workdir}: "
            f"{'none' if step is None else f'step {step}'}; the run ends at step {final}")

  t = _target(args)
  for attempt in range(1, args.max_attempts + 1):
    runner.comment(f"attempt {attempt}: {describe()}")
    if finished():
      runner.comment("the run is complete")
      if not args.keep:
        runner.run(delete_command(t))
      return 0
    if runner.dry_run:
      runner.comment("each attempt: look at the TPU VM's state")
      runner.run(describe_command(t))
      runner.comment("if it is not READY (missing, PREEMPTED, ...): recreate and reinstall")
      runner.run(delete_command(t))
      runner.run(create_command(t, info, args.runtime_version, args.spot, args.preemptible))
      cmd_install(args, runner)
      runner.comment("then start on every worker and follow worker 0 until it exits")
      _start(args, runner, info)
      runner.run(follow_command(t))
      until = (f"{done_file} exists" if done_file is not None else
               f"a checkpoint of step {final} is in {args.workdir}")
      runner.comment(f"repeat (at most {args.max_attempts} attempts) until {until}")
      return 0
    before = progress()
    state = tpu_state(t, runner)
    runner.comment(f"TPU VM {t.name}: {state or 'does not exist'}")
    if state != "READY":
      if state is not None:
        runner.run(delete_command(t))
      if runner.run(create_command(t, info, args.runtime_version, args.spot,
                                   args.preemptible)).returncode:
        runner.comment(f"create failed (no capacity?); retrying in {args.retry_wait}s")
        time.sleep(args.retry_wait)
        continue
      cmd_install(args, runner)
    elif attempt == 1:
      cmd_install(args, runner)
    _start(args, runner, info)
    rc = _follow(args, runner)
    if (rc not in (0, 255) and tpu_state(t, runner) == "READY" and progress() == before
        and not finished()):
      raise LaunchError(f"the run failed (exit {rc}) on a healthy TPU VM without saving a "
                        "new checkpoint: a bug, not a preemption; read worker 0's log above.")
    if rc:
      time.sleep(args.retry_wait)
  raise LaunchError(f"gave up after {args.max_attempts} attempts; {describe()} "
                    "(raise --max_attempts to go on).")


def cmd_logs(args, runner: Runner) -> int:
  return runner.run(follow_command(_target(args), args.worker)).returncode


def cmd_stop(args, runner: Runner) -> int:
  runner.comment("SIGTERM on every worker: bert_jax saves a checkpoint and exits 0")
  return runner.run(stop_command(_target(args))).returncode


def cmd_ssh(args, runner: Runner) -> int:
  t = _target(args)
  if args.command:
    return runner.run(t.ssh(args.worker, args.command)).returncode
  return runner.run(t.gcloud("ssh", t.name, flags=[f"--worker={args.worker}"])).returncode


def cmd_delete(args, runner: Runner) -> int:
  runner.check(delete_command(_target(args)), "deleting the TPU VM")
  return 0


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
  """--foo_bar, also spelled --foo-bar (gcloud's style)."""
  spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
  parser.add_argument(*spellings, dest=name, **kwargs)


_REQUIRED_HELP = {
    "name": "the TPU VM's name, e.g. --name=bert-large",
    "zone": "a zone that has the TPU type, e.g. --zone=us-central2-b for v4",
    "accelerator_type": "the slice, e.g. --accelerator_type=v4-8 (1 host) or v4-32 (4 hosts)",
    "config": "a config of this checkout, e.g. --config=configs/large.py",
    "workdir": "where checkpoints and logs go, e.g. --workdir=gs://BUCKET/run1",
}

_COMMANDS = {
    "create": (cmd_create, ("name", "zone", "accelerator_type"), "create a TPU VM / slice"),
    "install": (cmd_install, ("name", "zone"), "copy this checkout to every worker, pip install"),
    "run": (cmd_run, ("name", "zone", "accelerator_type", "config", "workdir"),
            "start bert_jax.main on every worker, stream worker 0's log"),
    "up": (cmd_up, ("name", "zone", "accelerator_type", "config", "workdir"),
           "create + install + run + follow + delete"),
    "resume": (cmd_resume, ("name", "zone", "accelerator_type", "config", "workdir"),
               "recreate and relaunch after preemption until the final step is saved"),
    "logs": (cmd_logs, ("name", "zone"), "stream a worker's log"),
    "stop": (cmd_stop, ("name", "zone"), "SIGTERM the run on every worker (it checkpoints)"),
    "ssh": (cmd_ssh, ("name", "zone"), "ssh to a worker, or run --command there"),
    "delete": (cmd_delete, ("name", "zone"), "delete the TPU VM / slice"),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m launch.tpu", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
  for name, (_, required, help_text) in _COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    _flag(p, "dry_run", action="store_true", help="print the commands, run nothing")
    _flag(p, "name", default="", help=_REQUIRED_HELP["name"])
    _flag(p, "zone", default="", help=_REQUIRED_HELP["zone"])
    _flag(p, "project", default="", help="GCP project (default: gcloud's)")
    if "accelerator_type" in required:
      _flag(p, "accelerator_type", default="", help=_REQUIRED_HELP["accelerator_type"])
    if name in ("create", "up", "resume"):
      _flag(p, "runtime_version", default="",
            help="TPU software version (default: the one Google lists for the generation)")
      _flag(p, "spot", action="store_true", help="Spot VM: cheaper, may be preempted")
      _flag(p, "preemptible", action="store_true", help="legacy preemptible VM")
    if name in ("install", "up", "resume"):
      _flag(p, "source", default="local",
            help="'local' (git archive of this checkout's HEAD) or a git URL[@ref]")
    if "config" in required:
      _flag(p, "config", default="", help=_REQUIRED_HELP["config"] +
            "; --config.KEY=VALUE overrides follow it, as for bert_jax.main")
      _flag(p, "workdir", default="", help=_REQUIRED_HELP["workdir"])
      _flag(p, "coordinator", default="auto", choices=("auto", "explicit"),
            help="auto: JAX finds the hosts (TPU); explicit: pass --coordinator_address, "
                 "--num_processes, --process_id to each worker's bert_jax.main")
      _flag(p, "coordinator_ip", default="",
            help="explicit coordinator address (default: worker 0's internal IP)")
      _flag(p, "coordinator_port", type=int, default=8476, help="coordinator port")
    if name == "run":
      _flag(p, "detach", action="store_true", help="start and return; do not follow")
    if name in ("up", "resume"):
      _flag(p, "keep", action="store_true", help="do not delete the TPU VM at the end")
    if name == "resume":
      _flag(p, "max_attempts", type=int, default=20, help="give up after this many")
      _flag(p, "retry_wait", type=float, default=60.0, help="seconds between attempts")
    if name in ("logs", "ssh"):
      _flag(p, "worker", default="0", help="worker index (ssh: also 'all')")
    if name == "ssh":
      p.add_argument("--command", default="", help="run this instead of a login shell")
  return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
  """Parses argv; --config.KEY=VALUE overrides are collected into args.overrides."""
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if not args.subcommand:
    parser.print_help()
    raise LaunchError("give a command: " + ", ".join(_COMMANDS))
  unknown = [a for a in extra if not a.startswith("--config.")]
  if unknown or (extra and "config" not in _COMMANDS[args.subcommand][1]):
    raise LaunchError(f"{args.subcommand}: unknown argument(s) {unknown or extra}; "
                      f"see `python -m launch.tpu {args.subcommand} --help`.")
  args.overrides = list(extra)
  missing = [k for k in _COMMANDS[args.subcommand][1] if not getattr(args, k)]
  if missing:
    raise LaunchError(f"{args.subcommand}: missing " + "; ".join(
        f"--{k} ({_REQUIRED_HELP[k]})" for k in missing))
  if getattr(args, "spot", False) and getattr(args, "preemptible", False):
    raise LaunchError("--spot and --preemptible exclude each other: pick --spot.")
  return args


def main(argv: Sequence[str] | None = None, out=None) -> int:
  try:
    args = parse(sys.argv[1:] if argv is None else argv)
    runner = Runner(args.dry_run, out)
    if args.dry_run:
      runner.comment(f"dry run of `{args.subcommand}`: nothing is executed")
    require_gcloud(runner)
    return _COMMANDS[args.subcommand][0](args, runner)
  except LaunchError as e:
    print(f"launch.tpu: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
