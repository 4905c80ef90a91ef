"""Checkpoints of our own runs: what a run saves, how it resumes, and how others read it.

- Pre-training (train.py): `Checkpointer`, an orbax CheckpointManager whose steps hold
  the train state, each host's data-iterator position (`DataStateHandler`) and the
  config, written asynchronously, the last `keep` kept: WORKDIR/checkpoints/<step>/.
- Warm starts: `warm_start` copies a pretrained encoder (or everything) into a state.
- Fine-tuning: the best params (`save_params` / `restore_params`): WORKDIR/best/params
  (orbax) + config.json (Google/Hugging Face spelling).
- Reading runs: `find_run_checkpoint` (latest finished step), `load_run` (params, any
  mesh), `saved_config` and `param_shapes_from_checkpoint` (resume checks, preflight.py).
- Any checkpoint by the name a user types: `resolve`, the one resolver behind every
  checkpoint argument (our runs here, the rest through weights.resolve_foreign), then
  `load_pretrained` / `vocab_file_of` / `check_init_checkpoint` (casing included).

Foreign formats (Google TF, Hugging Face, our converted directories) are weights.py.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import json
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
  step_dir = paths.as_path(paths.abspath(step_dir))
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

def resolve(path: str) -> weights.Resolved:
  """The one checkpoint resolver: any name a user types -> weights.Resolved (format, the
  path to read, the vocabulary shipped with it, what it says about casing).

  Tried in order: a bert_jax pre-training run (its workdir, checkpoints/ dir or one step
  dir: the latest finished step); a fine-tuning run (its workdir or best/ dir: the best
  params); a converted directory, a Hugging Face directory, a Google TF directory, its
  `bert_model.ckpt` prefix or its `.zip` (extracted to a cache directory); a Hugging Face
  Hub id (`bert-base-uncased`, `google-bert/bert-base-uncased`, `org/name`) through
  huggingface_hub, its cache and HF_HUB_OFFLINE honoured. Local paths and gs:// alike.
  Raises CheckpointError listing what was tried for this spelling.
  """
  if not path:
    raise CheckpointError("no checkpoint given: pass a checkpoint directory, prefix, .zip, "
                          "Hugging Face Hub id or bert_jax workdir.")
  tried: list[str] = []
  resolved = _resolve_run(path, tried) or weights.resolve_foreign(path, tried)
  if resolved is None:
    raise CheckpointError(
        f"checkpoint {path!r} does not exist or is not one: tried {'; '.join(tried)}. Pass "
        "a Google TF directory, its bert_model.ckpt prefix or .zip, a Hugging Face "
        "directory or Hub id (e.g. google-bert/bert-base-uncased), a bert_jax.tools.convert "
        "output or a bert_jax workdir.")
  return resolved


def _resolve_run(path: str, tried: list[str]) -> weights.Resolved | None:
  """Our own runs: a pre-training workdir/step, a fine-tuning workdir or its best/."""
  if not paths.is_dir(path):
    return None
  best = _best_dir(path)
  found = None if best else find_run_checkpoint(path)
  if found is not None:
    step_dir, _ = found
    saved = saved_config(step_dir) or {}
    workdir = paths.as_path(step_dir).parent
    if workdir.name == RUN_CHECKPOINT_DIR:
      workdir = workdir.parent
    # The vocabulary the run copied into its workdir, else the one its config names.
    vocab = weights.vocab_in(str(workdir)) or (
        config_lib.vocab_file(ml_collections.ConfigDict({"vocab_file": saved.get(
            "vocab_file", "")})) if saved else "")
    lower = saved.get("do_lower_case")
    return weights.Resolved(path, "bert_jax_run", step_dir, vocab,
                            lower if isinstance(lower, bool) else None,
                            f"the run's config ({step_dir}/config)")
  if best is None:
    tried.append(f"a bert_jax run: {path} has no {RUN_CHECKPOINT_DIR}/<step>/ (pre-training) "
                 f"or {BEST_DIR}/params (fine-tuning)")
    return None
  workdir = str(paths.as_path(best).parent)
  run_config = paths.join(workdir, "config.json")
  saved = paths.read_json(run_config) if paths.is_file(run_config) else {}
  vocab = saved.get("vocab_file") or ""
  if not vocab and saved.get("init_checkpoint"):
    try:
      vocab = resolve(saved["init_checkpoint"]).vocab_file
    except CheckpointError:
      vocab = ""
  lower = saved.get("do_lower_case")
  return weights.Resolved(path, "bert_jax_best", best, vocab,
                          lower if isinstance(lower, bool) else None,
                          f"the run's config ({run_config})")


def _best_dir(path: str) -> str | None:
  """A fine-tuning run's best params dir (save_params) for its workdir or best/ itself."""
  for best in (paths.join(path, BEST_DIR), path):
    if (paths.is_dir(paths.join(best, "params")) and paths.is_file(paths.join(best, "config.json"))
        and not paths.is_file(paths.join(best, weights.MODEL_CONFIG_FILE))):
      return best
  return None


def checkpoint_format(path: str) -> str:
  """'hf' | 'tf' | 'bert_jax' | 'bert_jax_run' | 'bert_jax_best' for a path
  load_pretrained accepts; raises CheckpointError (what was tried) otherwise."""
  return resolve(path).format


def load_best(best_dir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A fine-tuning run's best params (save_params) -> (config.model, numpy params)."""
  m = weights.model_config_from_bert_json(paths.join(best_dir, "config.json"))
  params = weights.restore_numpy(paths.join(best_dir, "params"))
  check_param_shapes(params, BertConfig.from_config(m))
  return m, model_lib.layers_layout(params, m.scan_layers)


def load_pretrained(path: str, do_lower_case: bool | None = None
                    ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Any checkpoint `resolve` accepts -> (config.model, params as numpy arrays).

  With `do_lower_case` (the config's), the checkpoint's own casing, where it says, must
  agree (weights.check_case: one error naming both and the fix).
  """
  r = resolve(path)
  if do_lower_case is not None:
    weights.check_case(do_lower_case, r.do_lower_case, path, r.casing_source)
  if r.format == "bert_jax_run":
    return load_run(r.path)
  if r.format == "bert_jax_best":
    return load_best(r.path)
  if r.format == "hf":
    return weights.load_hf(r.path)
  if r.format == "tf":
    return weights.load_tf(r.path)
  return weights.load_converted(r.path)


def vocab_file_of(path: str) -> str:
  """The vocabulary that ships with a checkpoint ('' if none, or no such checkpoint)."""
  try:
    return resolve(path).vocab_file if path else ""
  except CheckpointError:
    return ""


def check_init_checkpoint(config) -> weights.Resolved:
  """config.init_checkpoint resolves and its casing agrees with config.do_lower_case
  (fast: nothing is loaded); raises CheckpointError otherwise."""
  try:
    r = resolve(config.init_checkpoint)
  except CheckpointError as e:
    raise CheckpointError(f"config.init_checkpoint={config.init_checkpoint}: {e}") from None
  weights.check_case(config.do_lower_case, r.do_lower_case, config.init_checkpoint,
                     r.casing_source)
  return r


# ---------------------------------------------------------------------------------------
# Warm starts and fine-tuned params
# ---------------------------------------------------------------------------------------


def warm_start(state, shardings, config):
  """Copies config.init_checkpoint's encoder (init_mode=encoder) or all params (full).

  Any checkpoint `resolve` accepts: a bert_jax run (phase 2 from phase 1), a converted
  one, Google's TF release (directory, prefix, .zip) or a Hugging Face directory / Hub id;
  its casing must agree with config.do_lower_case.
  """
  ckpt_model, params = load_pretrained(config.init_checkpoint, config.do_lower_case)
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
  directory = paths.abspath(directory)  # orbax wants absolute local paths (gs:// as is)
  if paths.exists(directory) and jax.process_index() == 0:
    paths.rmtree(directory)
  with ocp.StandardCheckpointer() as ckptr:  # close(): waits, then stops its threads
    ckptr.save(paths.as_path(directory) / "params", params)
  if jax.process_index() == 0:
    paths.write_json(paths.join(directory, "config.json"),
                     weights.model_config_to_bert_json(model_cfg))


def restore_params(params_dir: str, model, example_inputs, mesh):
  """Params written by save_params (orbax) -> sharded params for `model`."""
  import orbax.checkpoint as ocp
  path = paths.as_path(paths.abspath(params_dir)) / "params"
  if not path.is_dir():
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


# ---------------------------------------------------------------------------------------
# Fine-tuning runs: the same manager, keeping the best evaluation's step as well
# ---------------------------------------------------------------------------------------


class _LatestAndBest(ocp.checkpoint_managers.PreservationPolicy):
  """Keeps the latest `keep` steps and the step whose params scored best on dev."""

  def __init__(self, keep: int):
    self.keep = max(1, int(keep))
    self.best_step: int | None = None

  def should_preserve(self, checkpoints, *, context):  # pylint: disable=unused-argument
    n = len(checkpoints)
    return [i >= n - self.keep or c.step == self.best_step for i, c in enumerate(checkpoints)]


class FinetuneCheckpointer(Checkpointer):
  """A fine-tuning run's CheckpointManager: WORKDIR/checkpoints/<step>/{state, data, config}.

  `state` is the train state (params, optimizer state, step, dropout RNG), `data` the
  loop's JSON record (data position in the epoch, eval history, best so far, pending
  train metrics; written per host by DataStateHandler, the same on every host) and
  `config` the run's config. Saves are asynchronous; the latest `keep` steps are kept
  plus the step holding the best dev evaluation's params (`set_best`), which the loop
  checkpoints right after every evaluation, so the best params need no copy of their own
  until the run ends (WORKDIR/best, save_params).
  """

  def __init__(self, directory, keep: int, async_save: bool = True):  # pylint: disable=super-init-not-called
    self.directory = epath.Path(directory)
    self.policy = _LatestAndBest(keep)
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True,
        preservation_policy=self.policy)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "config"))
    self.keep = keep
    self._closed = False
    cleanup.close_at_exit(self)

  def set_best(self, step: int | None) -> None:
    """The step whose checkpoint holds the best params: never deleted while it is."""
    self.policy.best_step = step

  def restore_params(self, step: int, abstract_params):
    """The params of checkpoint `step` (the best evaluation's) on `abstract_params`'
    shardings; the rest of that step's state is not read."""
    target = {"params": abstract_params}
    with ocp.PyTreeCheckpointer() as ckptr:  # the manager's handler restores whole items
      out = ckptr.restore(self.directory / str(step) / "state", args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
    return out["params"]

  def saved_config(self, step: int) -> dict:
    """The config a step was written with (its `config` item)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore())).config
