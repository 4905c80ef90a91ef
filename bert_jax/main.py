"""Entry point: `python -m bert_jax.main --config=configs/tiny.py --workdir=runs/tiny`.

Any config value can be overridden on the command line (`--config.train.batch_size=512`);
the config is locked, so a misspelt key is an error, not a silently ignored new field.
A wrong override fails at once (no jax import needed) with one line naming the key and
the fix, and the values are checked (mesh vs devices, batch vs data axes, ...) before
anything is compiled. Then `config.task` picks the job: "pretrain" runs
`bert_jax.train.train_and_evaluate`; a fine-tuning task (glue, squad, swag) runs
`bert_jax.tasks.<task>.run(config, workdir)`.

The console shows the run's progress lines and warnings; library logging (orbax's INFO
lines about every checkpoint, absl, jax) goes to <workdir>/logs/<host>.log, and also to
the console with --verbosity=0 (bert_jax/console.py).

Multi-host: on a TPU pod every worker runs the same command and JAX finds the others;
elsewhere pass --coordinator_address, --num_processes and --process_id, or the
JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID env vars (launch/tpu.py does
both; bert_jax/distributed.py). SIGTERM checkpoints and exits 0 (bert_jax/preemption.py).
"""
from __future__ import annotations

import importlib
import sys

from absl import app, flags
from ml_collections import config_flags

from bert_jax import config as config_lib
from bert_jax import console



def define_flags(summarize: bool = False) -> None:
  """--config, --workdir and the multi-host flags (only when run as a program, so that
  importing this module next to another entry point defines nothing)."""
  config_flags.DEFINE_config_file(
      "config", None,
      "Config file (configs/*.py); override values with --config.KEY=VALUE.",
      lock_config=True)
  flags.DEFINE_string("workdir", None,
                      "Checkpoints, metrics and outputs go here (local path or gs://).")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 (multi-host without TPU metadata).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
  flags.DEFINE_integer("process_id", None, "This process's index.")
  if summarize:
    flags.DEFINE_string("summarize", None,
                        "Comma list of workdirs: print the table over their finished runs.")


PRETRAIN = "pretrain"
FINETUNE_TASKS = ("glue", "squad", "swag")
PROG = "bert_jax.main"  # the program name in error lines; start() sets a front's
TASK = None  # a fine-tuning front's task (start(task=...)): other configs are refused


def _fail(message: str) -> None:
  print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv):
  """absl flag parsing with every config/flag error turned into one clear line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
    _fail(config_lib.explain_override_error(argv, e, PROG))


def initialize_distributed() -> None:
  """jax.distributed on a TPU VM (auto) or from the flags / JAX_* env (distributed.py)."""
  from bert_jax import distributed
  try:
    f = flags.FLAGS
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  except distributed.DistributedError as e:
    _fail(str(e))


def run(config, workdir: str):
  """Dispatches on config.task; returns what the task returns."""
  from bert_jax.config import ConfigError
  from bert_jax import preflight
  config_lib.check_required(config)  # e.g. phase 2's init_checkpoint
  task = config.task
  # A step too big for the devices stops after compiling, before the first step and
  # before any file is written; the directories made for it go again (preflight.py).
  if task == PRETRAIN:
    from bert_jax import train
    from bert_jax import preemption
    train.check_config(config)  # fails fast, before building or compiling anything
    # SIGTERM: finish the step, checkpoint, exit 0 (preemption.py).
    with preflight.removed_on_failure(workdir):
      return train.train_and_evaluate(config, workdir, should_stop=preemption.install())
  if task in FINETUNE_TASKS:
    module = importlib.import_module(f"bert_jax.tasks.{task}")
    with preflight.removed_on_failure(workdir):
      return module.run(config, workdir)
  raise ConfigError(f"config.task={task!r} is not a task: use one of "
                    f"{', '.join((PRETRAIN,) + FINETUNE_TASKS)} (e.g. --config.task=pretrain).")


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; overrides look like --config.train.batch_size=64")
  f = flags.FLAGS
  if "summarize" in f and f.summarize:  # a front's table over finished runs: no training
    module = importlib.import_module(f"bert_jax.tasks.{TASK}")
    try:
      print(module.summarize_text(f.summarize.split(",")))
    except ValueError as e:  # no results there: one line, as every other error
      _fail(str(e))
    return
  config, workdir = f.config, f.workdir
  if config is None or not workdir:
    _fail(f"--config and --workdir are required: python -m {PROG} "
          "--config=configs/tiny.py --workdir=runs/tiny")
  if TASK is not None and config.task != TASK:
    _fail(f"--config is a config.task={config.task!r} config but this is the {TASK} entry "
          f"point: use configs/{TASK}.py (or python -m bert_jax.main for any task).")
  # Library logging (orbax, absl, jax) -> <workdir>/logs/<host>.log; the console keeps
  # our progress lines and warnings unless --verbosity asks for more (console.py).
  console.setup(workdir, process_id=f.process_id)
  initialize_distributed()
  try:
    run(config, workdir)
  except (ValueError, ArithmeticError) as e:
    # Our own error classes (ConfigError, CheckpointError, TokenizerError, DataError,
    # WorkdirError, NonFiniteError, ...) already say what is wrong and how to fix it: one
    # line, no traceback.
    if type(e).__module__.startswith("bert_jax."):
      _fail(str(e))
    raise


def start(prog: str = "bert_jax.main", task: str | None = None,
          default_config: str | None = None, summarize: bool = False) -> None:
  """The one start-up of every training job: `python -m bert_jax.main` and the fine-tuning
  fronts (`python -m bert_jax.glue`, `.squad`, `.swag`) all go through it: huge pages,
  no TPU probing without a TPU, flags, one-line errors, distributed init, dispatch."""
  global PROG, TASK
  PROG, TASK = prog, task
  # Huge pages for XLA:CPU's per-step buffers (bert_jax/hugepages.py): a fresh process.
  from bert_jax import hugepages
  hugepages.reexec_with_hugepages(sys.orig_argv[1:])  # the same command, as it was typed
  # Before jax starts a backend: no libtpu probing on a machine without a TPU (console.py).
  console.quiet_start(sys.argv)
  if default_config and config_lib.config_file_arg(sys.argv) is None:
    sys.argv.insert(1, f"--config={default_config}")  # as if typed: one parsing path
  define_flags(summarize)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  start()
