"""BERT pre-training (MLM + NSP): the loss, the sharded loop, eval, checkpoints, metrics.

`train_and_evaluate(config, workdir)` is what `python -m bert_jax.main` runs for
`config.task == "pretrain"`. It builds the mesh from `config.mesh`, compiles the step
from shapes alone (a step that cannot fit the devices stops here, before anything is
allocated or written, with one line: preflight.check_memory_fits), initialises the
model and optimizer directly into their shardings (train_lib), and runs one jitted,
donated step per global batch. Every `train.eval_every` steps it measures MLM accuracy,
NSP accuracy and loss on held-out data; every `train.checkpoint_every` steps it writes
an orbax checkpoint (train state + each host's data-iterator position + config),
asynchronously, keeping the last `train.keep_checkpoints`.

Where the run starts (big_vision's order): the workdir's latest checkpoint (exact
resume: model, optimizer, dropout RNG, data iterator) > `config.init_checkpoint` (warm
start of the encoder, or of everything with `init_mode="full"`) > random init.

Process 0 writes `metrics.jsonl`, TensorBoard events under `tensorboard/` and
`config.json`, and prints one progress line every `train.log_every` steps.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from bert_jax import cleanup
from bert_jax import distributed
from bert_jax import fault_injection  # test-only hooks; no-ops unless env vars are set
from bert_jax import finetune  # MetricWriter: one writer for every task's metrics
from bert_jax import flops as flops_lib
from bert_jax import health
from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import partitioning
from bert_jax import paths
from bert_jax import preflight
from bert_jax import train_lib
from bert_jax import checkpoints
from bert_jax import config as config_lib
from bert_jax.config import BUNDLED_DIR, ConfigError, validate_model
from bert_jax.tasks import pretrain as pretrain_task

CHECKPOINT_DIR = checkpoints.RUN_CHECKPOINT_DIR
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------------------
# Config checks: everything that can be wrong is found here, before anything compiles.
# ---------------------------------------------------------------------------------------

def check_config(config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """Raises ConfigError (naming the key and the fix) for a bad config; returns the mesh."""
  validate_model(config.model)
  d, t = config.data, config.train
  if d.max_seq_length > config.model.max_position_embeddings:
    raise ConfigError(
        f"config.data.max_seq_length={d.max_seq_length} exceeds config.model."
        f"max_position_embeddings={config.model.max_position_embeddings}: lower it or raise "
        "max_position_embeddings (only before pre-training starts).")
  if not 0 < d.max_predictions_per_seq <= d.max_seq_length:
    raise ConfigError(
        f"config.data.max_predictions_per_seq={d.max_predictions_per_seq}: must be in "
        f"1..max_seq_length={d.max_seq_length} (the paper: 20 at seq 128, 80 at seq 512).")
  if config.init_mode not in ("encoder", "full"):
    raise ConfigError(f"config.init_mode={config.init_mode!r}: use 'encoder' (new heads) "
                      "or 'full' (continue pre-training with the checkpoint's heads).")
  for key in ("log_every", "eval_every", "checkpoint_every", "grad_accum_steps",
              "keep_checkpoints", "batch_size"):
    if t[key] < 1:
      raise ConfigError(f"config.train.{key}={t[key]}: must be >= 1.")
  if t.eval_steps < 0:
    raise ConfigError(f"config.train.eval_steps={t.eval_steps}: must be >= 0 (0 = no eval).")
  if t.nan_policy not in ("skip", "stop"):
    raise ConfigError(f"config.train.nan_policy={t.nan_policy!r}: use 'skip' or 'stop'.")
  optim.make_optimizer(t)  # optimizer name, num_steps, warmup_steps
  shape = tuple(config.mesh.shape)
  if not all(isinstance(s, int) for s in shape):
    raise ConfigError(
        f"config.mesh.shape={shape!r}: must be integers, one per axis of config.mesh.axes="
        f"{tuple(config.mesh.axes)}, e.g. --config.mesh.shape='(-1,1,1)' (-1 = the rest).")
  mesh = partitioning.make_mesh(config.mesh, devices)
  if t.batch_size % jax.process_count():
    raise ConfigError(
        f"config.train.batch_size={t.batch_size} is not divisible by the "
        f"{jax.process_count()} hosts: use a multiple of {jax.process_count()}.")
  partitioning.check_batch_size(t.batch_size, mesh, micro_steps=t.grad_accum_steps)
  return mesh


def check_run_inputs(config) -> None:
  """Fields the command line must set, and the warm-start checkpoint, exist; the
  vocabulary has one token per word-embedding row (fast)."""
  config_lib.check_required(config)
  if config.init_checkpoint and not paths.as_path(config.init_checkpoint).exists():
    raise ConfigError(
        f"config.init_checkpoint={config.init_checkpoint}: no such file or directory; pass "
        "a bert_jax workdir (phase 1), a converted, Google TF or Hugging Face checkpoint.")
  # configs/base.py and large.py leave vocab_file empty: the bundled 8,000-token toy
  # vocabulary must not silently feed a 30,522-row model (configs/tiny.py sets 8000).
  checkpoints.check_vocab_matches(vocab_file(config), config.model,
                                  config_vocab_file=config.vocab_file)


def vocab_file(config) -> str:
  """config.vocab_file, or the vocabulary bundled with the repository."""
  return config.vocab_file or os.path.join(BUNDLED_DIR, "vocab.txt")


# ---------------------------------------------------------------------------------------
# Model, loss, metrics
# ---------------------------------------------------------------------------------------

def make_model(config) -> model_lib.BertForPreTraining:
  return model_lib.BertForPreTraining(model_lib.BertConfig.from_config(config.model))


def make_init_fn(model, config) -> Callable[[jax.Array], Any]:
  """rng -> boxed params; shapes do not depend on the dummy batch (positions are a table)."""
  seq, preds = config.data.max_seq_length, config.data.max_predictions_per_seq

  def init(rng):
    ids = jnp.zeros((1, seq), jnp.int32)
    positions = jnp.zeros((1, preds), jnp.int32)
    return model.init({"params": rng}, ids, ids, jnp.ones_like(ids), positions,
                      deterministic=True)["params"]
  return init


def denominators(batch: dict) -> dict[str, jax.Array]:
  """Full-batch normalisers (computed on the whole global batch, so that the sums of the
  micro-batches add up to its means): real MLM predictions (+1e-5, as the original) and
  sequences."""
  return {"mlm": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + 1e-5,
          "nsp": jnp.float32(batch["input_ids"].shape[0])}


def _apply(model, params, batch, deterministic, rng=None):
  return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                     batch["input_mask"], batch["masked_lm_positions"],
                     deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})


def make_compute_loss(model) -> train_lib.ComputeLoss:
  """The train_lib loss: additive over micro-batches (sums / full-batch denominators)."""
  def compute_loss(params, batch, rng, den):
    mlm_logits, nsp_logits = _apply(model, params, batch, False, rng)
    m = pretrain_task.means(pretrain_task.pretraining_sums(mlm_logits, nsp_logits, batch),
                            den)
    loss = m.pop("loss")
    return loss, m
  return compute_loss


def make_eval_step(model, mesh, params_shardings):
  """Jitted, sharded (params, batch) -> sums of pretraining_sums (no dropout)."""
  def apply(params, batch):
    mlm_logits, nsp_logits = _apply(model, params, batch, True)
    return pretrain_task.pretraining_sums(mlm_logits, nsp_logits, batch)
  return train_lib.make_predict_step(apply, mesh, params_shardings)


def evaluate(eval_step, params, batches, mesh, num_batches: int) -> dict[str, float]:
  """Mean loss and accuracies over `num_batches` held-out batches (exact, not averaged)."""
  total = None
  n = 0
  for local in batches:
    if n >= num_batches:
      break
    sums = eval_step(params, train_lib.global_batch(local, mesh))
    total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
    n += 1
  if total is None:
    return {}
  total = jax.device_get(total)
  means = pretrain_task.means(total, pretrain_task.denominators_from_sums(total))
  return {k: float(v) for k, v in means.items()}


# ---------------------------------------------------------------------------------------
# Checkpoints: orbax CheckpointManager with the train state, each host's data-iterator
# state (one JSON file per process) and the config.
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
    fault_injection.on_checkpoint_finalize(directory)  # kill_in_save@S (tests only)

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
      error = preflight.write_failure(e, self.directory, self.latest_step(), self.keep)
      if error is None:
        raise
      raise error from None

  def close(self) -> None:
    """Waits for pending saves and stops orbax's threads (again: a no-op)."""
    if not self._closed:
      self._closed = True
      cleanup.forget(self)
      self.manager.close()


def warm_start(state, shardings, config):
  """Copies config.init_checkpoint's encoder (init_mode=encoder) or all params (full).

  Any checkpoint checkpoints.load_pretrained reads: a bert_jax run (phase 2 from phase 1),
  a converted one, Google's TF release or a Hugging Face directory.
  """
  ckpt_model, params = checkpoints.load_pretrained(config.init_checkpoint)
  for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size"):
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


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, num_steps: int, m: dict, eta_s: float) -> str:
  """One stdout line: step, loss, MLM acc, NSP acc, lr, grad norm, seq/s, MFU, ETA."""
  line = (f"step {step}/{num_steps} | loss {m['loss']:.4f} | mlm_acc {m['mlm_accuracy']:.3f}"
          f" | nsp_acc {m['nsp_accuracy']:.3f} | lr {m['learning_rate']:.2e}"
          f" | gnorm {m['grad_norm']:.2f}")
  if "seq_per_s" in m:
    mfu = f"{100 * m['mfu']:.1f}%" if "mfu" in m else "n/a"
    line += (f" | {m['seq_per_s']:.1f} seq/s | {m['tflops_per_device']:.3g} TFLOP/s/dev"
             f" | MFU {mfu} | ETA {format_duration(eta_s)}")
  return line


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------

def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and sharding of one global batch of the data pipeline."""
  from bert_jax import aot
  return aot.abstract_batch(config, mesh)


def compile_step(step_fn, state, batch, config, mesh, is_main: bool):
  """The train step compiled for (state, batch) (arrays or ShapeDtypeStructs); prints
  the compile time and memory, and raises preflight.DoesNotFitError (one line: what it
  needs, what there is, the fixes) when it cannot fit the devices."""
  t0 = time.time()
  with partitioning.activate(mesh):
    lowered = step_fn.jitted.lower(state, batch)

  def report(compiled, _):
    mem = compiled.memory_analysis()
    if is_main:
      extra = (f", temp {mem.temp_size_in_bytes / 2**20:.0f} MiB/device"
               if mem is not None else "")
      print(f"compiled train step in {time.time() - t0:.1f}s{extra}", flush=True)

  hints = preflight.train_hints(config, mesh, state, f"seq {config.data.max_seq_length}")
  return preflight.compile_checked(lowered, mesh.devices.flat, hints, report=report)


def default_iterator(config, tokenizer, split: str) -> Iterator[dict]:
  """This host's share of the pre-training batches (bert_jax.data)."""
  from bert_jax import data
  return data.make_pretraining_iterator(
      config, tokenizer, split=split, process_index=jax.process_index(),
      process_count=jax.process_count(), seed=config.seed)


def _log_scalars(host: list[dict], step: int, steps_timed: int, elapsed: float, lr_fn,
                 batch_size: int, seq_len: int, flops_per_step: float, n_dev: int,
                 peak: float | None) -> dict[str, float]:
  """Means of the fetched step metrics plus lr, throughput and MFU (when timed)."""
  scalars = {k: float(np.mean([h[k] for h in host])) for k in host[0] if k != "skipped_steps"}
  scalars["skipped_steps"] = int(host[-1]["skipped_steps"])
  scalars["learning_rate"] = float(lr_fn(step - 1))
  if steps_timed:
    dt = elapsed / steps_timed
    scalars.update(step_time_s=dt, seq_per_s=batch_size / dt,
                   tokens_per_s=batch_size * seq_len / dt,
                   tflops_per_device=flops_per_step / dt / n_dev / 1e12)
    if peak:
      scalars["mfu"] = flops_per_step / dt / (n_dev * peak)
  return scalars


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       should_stop: Callable[[], bool] | None = None,
                       make_iterator: Callable[..., Iterator[dict]] | None = None
                       ) -> dict[str, Any]:
  """Pre-trains to config.train.num_steps (resuming from workdir); returns a summary.

  Args:
    config: the full config (configs/*.py); checked first (check_config).
    workdir: checkpoints, metrics.jsonl, tensorboard/ and config.json go here.
    should_stop: checked after every step; when it returns True the loop saves a
      checkpoint at the current step and returns (the SIGTERM hook).
    make_iterator: (config, tokenizer, split) -> iterator of host-local numpy batches
      with get_state()/set_state(); default bert_jax.data.make_pretraining_iterator.
  Returns:
    {'step', 'train': last logged train metrics, 'eval': last eval metrics,
     'stopped_early', 'history': [(step, loss)] of the logged train losses}.
  """
  t_start = time.time()
  mesh = check_config(config)
  check_run_inputs(config)
  t = config.train
  # orbax wants absolute local paths (runs/tiny -> /abs/runs/tiny); gs:// stays as is.
  workdir = paths.as_path(workdir if paths.is_remote(workdir) else os.path.abspath(workdir))
  model = make_model(config)
  tx = optim.make_optimizer(t)
  init_fn = make_init_fn(model, config)
  abstract, shardings = train_lib.abstract_train_state(init_fn, tx, mesh, config.seed)
  # Before anything is written or compiled: the workdir is writable, has room, and holds
  # no checkpoint this config cannot continue (preflight.py).
  resume_note = preflight.check_workdir(config, workdir, workdir / CHECKPOINT_DIR,
                                        lambda: abstract)
  is_main = jax.process_index() == 0
  if is_main and resume_note:
    print(resume_note, flush=True)
  step_fn = train_lib.make_train_step(
      make_compute_loss(model), denominators, tx, mesh, shardings,
      grad_accum_steps=t.grad_accum_steps)
  # Compile once, up front, from shapes alone, and stop here (nothing allocated, nothing
  # written) if the step cannot fit the devices: one line with the memory and the fixes.
  batch_spec = abstract_batch(config, mesh)
  compiled = compile_step(step_fn, abstract, batch_spec, config, mesh, is_main)
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  make_iterator = fault_injection.wrap_make_iterator(make_iterator or default_iterator)

  from bert_jax import tokenization
  tokenizer = tokenization.load_tokenizer(vocab_file(config), config.do_lower_case)
  if is_main and not (workdir / "vocab.txt").exists():
    (workdir / "vocab.txt").write_text(epath.Path(vocab_file(config)).read_text())

  ckpt = Checkpointer(workdir / CHECKPOINT_DIR, t.keep_checkpoints, t.async_checkpointing)
  train_iter = make_iterator(config, tokenizer, "train")
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, abstract)
    train_iter.set_state(data_state)
    logging.info("Resumed from %s at step %d", ckpt.directory, latest)
    if is_main:
      print(f"resumed from {ckpt.directory} at step {latest}", flush=True)
  else:
    state, shardings = train_lib.create_train_state(init_fn, tx, mesh, config.seed)
    if config.init_checkpoint:
      state = warm_start(state, shardings, config)
  n_params = model_lib.count_params(state.params)
  eval_step = make_eval_step(model, mesh, shardings.params)
  lr_fn = optim.learning_rate_schedule(t)
  # metrics.jsonl + TensorBoard, process 0; keys "train/loss", "eval/mlm_accuracy", ...
  writer = finetune.MetricWriter(str(workdir), is_main)

  flops_per_step = flops_lib.pretrain_flops_per_step(
      config.model, t.batch_size, config.data.max_seq_length,
      config.data.max_predictions_per_seq)
  peak = flops_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                         t.get("peak_flops_per_device", 0.0))
  n_dev = jax.device_count()
  if is_main:
    print(f"bert_jax pretrain: {n_params / 1e6:.1f}M params, mesh {dict(mesh.shape)}, "
          f"{jax.process_count()} host(s), batch {t.batch_size} x seq "
          f"{config.data.max_seq_length}, {flops_per_step / 1e12:.3g} TFLOPs/step, "
          f"steps {int(state.step)}->{t.num_steps}", flush=True)

  step = int(state.step)
  skipped_before = int(state.skipped_steps)  # non-finite steps before the next log
  summary = {"step": step, "train": {}, "eval": {}, "stopped_early": False, "history": []}
  pending: list[dict] = []  # device metrics since the last log (fetched only then)
  t_last, steps_timed, paused = None, 0, 0.0  # step time excludes compile and eval
  first = True
  while step < t.num_steps:
    batch = train_lib.global_batch(next(train_iter), mesh)
    if first:
      # An iterator of other shapes or dtypes (tests): compile (and check) for those.
      if train_lib.batch_avals(batch) != train_lib.batch_avals(batch_spec):
        compiled = compile_step(step_fn, abstract, batch, config, mesh, is_main)
      distributed.barrier("bert_jax_first_step")  # hosts start together (distributed.py)
      first = False
    state, metrics = compiled(state, batch)
    step += 1
    pending.append(metrics)
    if t_last is None:
      jax.block_until_ready(metrics)
      t_last = time.time()
    else:
      steps_timed += 1

    if step % t.log_every == 0 or step == t.num_steps:
      host = jax.device_get(pending)
      scalars = _log_scalars(host, step, steps_timed,
                             time.time() - t_last - paused, lr_fn, t.batch_size,
                             config.data.max_seq_length, flops_per_step, n_dev, peak)
      writer.write(step, {f"train/{k}": v for k, v in scalars.items()})
      if is_main:
        eta = (t.num_steps - step) * scalars.get("step_time_s", 0.0)
        print(progress_line(step, t.num_steps, scalars, eta), flush=True)
      # NaN/Inf: skip (already done in the step) and report, or stop (health.py).
      health.apply_policy(t.nan_policy, host, step - len(host) + 1, skipped_before, ckpt,
                          is_main)
      skipped_before = scalars["skipped_steps"]
      summary["train"] = scalars
      summary["history"].append((step, scalars["loss"]))
      pending, t_last, steps_timed, paused = [], time.time(), 0, 0.0

    if t.eval_steps and (step % t.eval_every == 0 or step == t.num_steps):
      t0 = time.time()
      ev = evaluate(eval_step, state.params, make_iterator(config, tokenizer, "eval"), mesh,
                    t.eval_steps)
      writer.write(step, {f"eval/{k}": v for k, v in ev.items()})
      summary["eval"] = ev
      if is_main:
        print(f"eval step {step}: loss {ev['loss']:.4f} | mlm_acc {ev['mlm_accuracy']:.3f}"
              f" | nsp_acc {ev['nsp_accuracy']:.3f} ({time.time() - t0:.1f}s)", flush=True)
      paused += time.time() - t0

    stop = bool(should_stop and should_stop()) or ckpt.reached_preemption(step)
    if step % t.checkpoint_every == 0 or step == t.num_steps or stop:
      ckpt.save(step, state, train_iter.get_state(), config)
    if stop:
      summary["stopped_early"] = True
      logging.info("Stopping at step %d (checkpoint saved).", step)
      if is_main:
        print(f"preempted: stopping at step {step}; checkpoint {ckpt.directory}/{step} "
              "(the same command resumes from it)", flush=True)
      break

  ckpt.wait()
  ckpt.close()
  writer.close()
  summary["step"] = step
  if is_main:
    ev = summary["eval"]
    print(f"done: step {step} in {format_duration(time.time() - t_start)}"
          + (f"; eval loss {ev['loss']:.4f}, mlm_acc {ev['mlm_accuracy']:.3f}, nsp_acc "
             f"{ev['nsp_accuracy']:.3f}" if ev else "")
          + f"; curves: python -m bert_jax.plot --workdir={workdir}", flush=True)
  summary["params"] = state.params
  summary["state"] = state
  return summary
