"""Checkpoints of our own runs: what a run saves, how it resumes, and how others read it.

- Pre-training (train.py): `Checkpointer`, an orbax CheckpointManager whose steps hold
  the train state, each host's data-iterator position (`DataStateHandler`) and the
  config, written asynchronously, the last `keep` kept: WORKDIR/checkpoints/<step>/.
- Warm starts: `warm_start` copies a pretrained encoder (or everything) into a state.
- Fine-tuning: the best params (`save_params` / `restore_params`): WORKDIR/best/params
  (orbax) + config.json (Google/Hugging Face spelling).
- Reading runs: `find_run_checkpoint` (latest finished step), `load_run` (params, any
  mesh), `saved_config` and `param_shapes_from_checkpoint` (resume checks, preflight.py).

Foreign formats (Google TF, Hugging Face, our converted directories) are weights.py.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import json
import os
import shutil
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from bert_jax import cleanup
from bert_jax import config as config_lib
from bert_jax import model as model_lib
from bert_jax import partitioning, paths, train_lib
from bert_jax.config import ConfigError
from bert_jax import weights
from bert_jax.model import BertConfig
from bert_jax.paths import WorkdirError
from bert_jax.weights import CheckpointError, check_param_shapes

# WORKDIR/checkpoints/<step>/{state, data, config}; the config item holds the full config.
RUN_CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # fine-tuning: WORKDIR/best/{params, config.json}


# ---------------------------------------------------------------------------------------
# Pre-training runs: the CheckpointManager
# ---------------------------------------------------------------------------------------


class DataStateHandler(ocp.CheckpointHandler):
  """Writes/reads this process's data-iterator state as process_<i>-of-<n>.json."""

  def _file(self, directory) -> epath.Path:
    return epath.Path(directory) / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory, args: "DataStateSave"):
    state = args.state
    if isinstance(state, (bytes, bytearray)):  # grain DataLoader iterators give bytes
      state = {"__bytes__": base64.b64encode(bytes(state)).decode("ascii")}
    self._file(directory).write_text(json.dumps(state))

  def restore(self, directory, args: "DataStateRestore" = None):
    f = self._file(directory)
    if not f.exists():
      f = self._other_layout_file(directory)
    state = json.loads(f.read_text())
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
      state = base64.b64decode(state["__bytes__"])
    return state

  def _other_layout_file(self, directory) -> epath.Path:
    """A checkpoint from another host count: the pipeline's state is the global stream
    position, the same on every host, so any host's file resumes any host layout."""
    files = sorted(epath.Path(directory).glob("process_*-of-*.json"))
    states = [json.loads(f.read_text()) for f in files]
    if not states or not all(isinstance(s, dict) and "position" in s for s in states):
      raise FileNotFoundError(
          f"{self._file(directory)} is missing: the checkpoint was written by a different "
          f"number of hosts than the {jax.process_count()} now running, with a data "
          "iterator whose state is per host; resume with the same host count.")
    if len({s["position"] for s in states}) > 1:
      raise ValueError(f"{directory}: the hosts saved different data positions "
                       f"{sorted({s['position'] for s in states})}; the checkpoint is broken.")
    return files[0]

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


class Checkpointer:
  """The run's CheckpointManager: items `state`, `data` (per host) and `config`."""

  def __init__(self, directory, keep: int, async_save: bool = True):
    self.directory = epath.Path(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "config"))
    self.keep = keep
    self._closed = False
    # An async save still running at exit finishes first, close() or not (cleanup.py).
    cleanup.close_at_exit(self)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state, config) -> None:
    """Starts an (async) save; device arrays are copied out before it returns."""
    with self._full_disk_error():  # a previous async save may fail here
      self.manager.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=DataStateSave(data_state),
          config=ocp.args.JsonSave(config.to_dict())))

  def restore(self, step: int, abstract_state):
    """-> (train state on the shardings of `abstract_state`, this host's data state)."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=DataStateRestore()))
    return out.state, out.data

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    with self._full_disk_error():
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _full_disk_error(self):
    """A write that failed on a full disk -> one WorkdirError line (preflight.py)."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a full disk)
      error = write_failure(e, self.directory, self.latest_step(), self.keep)
      if error is None:
        raise
      raise error from None

  def close(self) -> None:
    """Waits for pending saves and stops orbax's threads (again: a no-op)."""
    if not self._closed:
      self._closed = True
      cleanup.forget(self)
      self.manager.close()




def write_failure(error: BaseException, checkpoint_dir, last_complete: int | None,
                  keep: int) -> WorkdirError | None:
  """A checkpoint write that failed for lack of space -> the WorkdirError to raise instead
  (naming the last complete checkpoint and the fixes); None for any other failure."""
  message = str(error)
  full = (getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or
          "No space left on device" in message or "os_error_code='28'" in message)
  if not full:
    return None
  last = (f"step {last_complete}, which the same command resumes from once there is room"
          if last_complete is not None else "none yet")
  return WorkdirError(
      f"writing a checkpoint to {checkpoint_dir} failed: the disk is full. The last complete "
      f"checkpoint is {last}; free space there, keep fewer checkpoints "
      f"(--config.train.keep_checkpoints={keep} now) or move the run to a bigger --workdir.")


# ---------------------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------------------


def find_run_checkpoint(path: str) -> tuple[str, int] | None:
  """A pre-training run (its workdir, checkpoints/ dir or one step dir) -> (step dir,
  step) of its latest finished checkpoint; None if `path` is not one."""
  from bert_jax import paths
  p = paths.as_path(path)
  if p.name.isdigit() and (p / "state").is_dir() and (p / "config").is_dir():
    return str(p), int(p.name)
  for root in (p / RUN_CHECKPOINT_DIR, p):
    if not root.is_dir():
      continue
    steps = [s for s in paths.checkpoint_steps(root)
             if (root / str(s) / "state").is_dir() and (root / str(s) / "config").is_dir()]
    if steps:
      return str(root / str(steps[-1])), steps[-1]
  return None


def load_run(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """The params (numpy, any mesh) and config.model of a pre-training run's latest (or the
  given) step; the optimizer state is not read."""
  import jax
  import orbax.checkpoint as ocp
  from bert_jax import paths
  found = find_run_checkpoint(path)
  if found is None:
    raise CheckpointError(f"{path}: no pre-training checkpoint ({RUN_CHECKPOINT_DIR}/<step>/"
                          "state) in it; pass a bert_jax workdir or one of its step dirs.")
  step_dir, _ = found
  # orbax reads absolute local paths only; gs:// stays as is.
  step_dir = paths.as_path(step_dir if paths.is_remote(step_dir) else os.path.abspath(step_dir))
  saved = json.loads((step_dir / "config" / "metadata").read_text())
  m = config_lib.model_config("base")
  m.update(saved["model"])
  config_lib.validate_model(m)
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(step_dir / "state").item_metadata.tree
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                        tree["params"])
  restored = ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      item={"params": tree["params"]}, restore_args={"params": restore_args},
      partial_restore=True))
  params = restored["params"]
  check_param_shapes(params, BertConfig.from_config(m))
  return m, model_lib.layers_layout(params, m.scan_layers)


def latest_checkpoint(checkpoint_dir) -> tuple[int, epath.Path] | None:
  steps = paths.checkpoint_steps(checkpoint_dir) if epath.Path(checkpoint_dir).is_dir() else []
  steps = [s for s in steps if (epath.Path(checkpoint_dir) / str(s) / "state").is_dir()]
  if not steps:
    return None
  return steps[-1], epath.Path(checkpoint_dir) / str(steps[-1])


def saved_config(step_dir) -> dict | None:
  """The config a checkpoint was written with (its `config` item), or None."""
  f = epath.Path(step_dir) / "config" / "metadata"
  return json.loads(f.read_text()) if f.exists() else None


def param_shapes_from_checkpoint(step_dir) -> dict[str, tuple]:
  """{'bert.encoder.layers.qkv.kernel': shape, ...} from a checkpoint's state metadata."""
  import orbax.checkpoint as ocp
  meta = ocp.PyTreeCheckpointer().metadata(epath.Path(step_dir) / "state").item_metadata.tree
  return {k: tuple(v.shape) for k, v in dotted(meta["params"]).items()}


def dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for k, v in tree.items():
      out.update(dotted(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


# ---------------------------------------------------------------------------------------
# Any checkpoint by its path
# ---------------------------------------------------------------------------------------

def checkpoint_format(path: str) -> str:
  """'hf' | 'tf' | 'bert_jax' | 'bert_jax_run' for a path load_pretrained accepts; raises
  otherwise."""
  if find_run_checkpoint(path) is not None:  # before 'hf': a run's workdir has config.json
    return "bert_jax_run"
  if os.path.isdir(path):
    names = set(os.listdir(path))
    if weights.MODEL_CONFIG_FILE in names and weights.PARAMS_DIR in names:
      return "bert_jax"
    if "config.json" in names:
      return "hf"
    if "bert_config.json" in names or any(n.endswith(".index") for n in names):
      return "tf"
  elif os.path.isfile(path + ".index"):
    return "tf"
  if not os.path.exists(path) and not os.path.exists(path + ".index"):
    raise CheckpointError(
        f"checkpoint {path!r} does not exist: pass a Hugging Face BERT directory, a Google "
        "TF checkpoint (directory or bert_model.ckpt prefix) or a bert_jax.tools.convert output.")
  raise CheckpointError(
      f"{path}: not a recognised checkpoint (expected a Hugging Face directory with "
      "config.json, a Google TF checkpoint with bert_config.json + bert_model.ckpt.index, "
      "or a directory written by `python -m bert_jax.tools.convert`).")


def load_pretrained(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Any supported checkpoint -> (config.model, params as numpy arrays).

  Accepts a Hugging Face directory (config.json), a Google TF checkpoint (directory with
  bert_config.json, or the `bert_model.ckpt` prefix), our own converted checkpoint, or a
  pre-training run (its workdir or a step directory: the latest step's params).
  """
  fmt = checkpoint_format(path)
  if fmt == "bert_jax_run":
    return load_run(path)
  if fmt == "hf":
    return weights.load_hf(path)
  if fmt == "tf":
    return weights.load_tf(path)
  return weights.load_converted(path)


def vocab_file_of(path: str) -> str:
  """The vocab.txt that ships beside a checkpoint ('' if none)."""
  d = path if os.path.isdir(path) else os.path.dirname(path)
  v = os.path.join(d, "vocab.txt")
  return v if os.path.isfile(v) else ""


# ---------------------------------------------------------------------------------------
# Warm starts and fine-tuned params
# ---------------------------------------------------------------------------------------


def warm_start(state, shardings, config):
  """Copies config.init_checkpoint's encoder (init_mode=encoder) or all params (full).

  Any checkpoint checkpoints.load_pretrained reads: a bert_jax run (phase 2 from phase 1),
  a converted one, Google's TF release or a Hugging Face directory.
  """
  ckpt_model, params = load_pretrained(config.init_checkpoint)
  for key in config_lib.MODEL_SHAPE_KEYS:
    if ckpt_model[key] != config.model[key]:
      raise ConfigError(
          f"config.init_checkpoint={config.init_checkpoint} has model.{key}="
          f"{ckpt_model[key]} but config.model.{key}={config.model[key]}: set "
          f"--config.model.{key}={ckpt_model[key]} (the checkpoint's model shape).")
  if config.init_mode == "encoder":
    state = train_lib.load_pretrained_subtree(state, shardings, params["bert"], "bert")
  else:
    state = train_lib.load_pretrained_subtree(state, shardings, params, None)
  logging.info("Warm start (%s) from %s", config.init_mode, config.init_checkpoint)
  return state


def save_params(directory: str, params, model_cfg) -> None:
  """Best params (orbax, params only) + config.json (HF/Google spelling) in directory."""
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and jax.process_index() == 0:
    shutil.rmtree(directory)
  with ocp.StandardCheckpointer() as ckptr:  # close(): waits, then stops its threads
    ckptr.save(os.path.join(directory, "params"), params)
  if jax.process_index() == 0:
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
      json.dump(weights.model_config_to_bert_json(model_cfg), f, indent=2)


def restore_params(params_dir: str, model, example_inputs, mesh):
  """Params written by save_params (orbax) -> sharded params for `model`."""
  import orbax.checkpoint as ocp
  path = os.path.join(os.path.abspath(params_dir), "params")
  if not os.path.isdir(path):
    raise CheckpointError(
        f"no fine-tuned params at {path}: run mode=train first or set "
        "--config.squad.params_dir to a fine-tuning workdir's best/ directory.")
  init = lambda rng: model.init(rng, *example_inputs)["params"]
  with partitioning.activate(mesh):
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    plain = partitioning.strip_boxes(abstract)
    shardings = partitioning.logical_to_shardings(plain, nn.get_partition_spec(abstract), mesh)
  target = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, shardings)
  return ocp.StandardCheckpointer().restore(path, target), shardings
