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

import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from bert_jax import compile_cache
from bert_jax import metrics
from bert_jax import weights
from bert_jax import distributed
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
from bert_jax.config import ConfigError
from bert_jax.tasks import pretrain

CHECKPOINT_DIR = checkpoints.RUN_CHECKPOINT_DIR
METRICS_FILE = metrics.METRICS_FILE


# ---------------------------------------------------------------------------------------
# Config checks: everything that can be wrong is found here, before anything compiles.
# ---------------------------------------------------------------------------------------

def check_config(config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """The pre-training config's checks (config.check_pretrain), then what needs the
  devices: the optimizer, the mesh and the batch over hosts and mesh; returns the mesh.
  Raises ConfigError naming the key and the fix."""
  config_lib.check_pretrain(config)
  t = config.train
  optim.make_optimizer(t)  # optimizer name, num_steps, warmup_steps
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
  config_lib.check_pretrain_vocab(config)  # base/large/pods name their vocabulary
  if config.init_checkpoint:  # every spelling checkpoints.resolve accepts; casing agrees
    checkpoints.check_init_checkpoint(config)
  # configs/base.py and large.py leave vocab_file empty: the bundled 8,000-token toy
  # vocabulary must not silently feed a 30,522-row model (configs/tiny.py sets 8000).
  weights.check_vocab(config_lib.vocab_file(config), config.model,
                                  config_vocab_file=config.vocab_file)


# ---------------------------------------------------------------------------------------
# Checkpoints: orbax CheckpointManager with the train state, each host's data-iterator
# state (one JSON file per process) and the config.
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


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
  compile_cache.enable(config.train.get("compilation_cache_dir", ""))
  t = config.train
  # orbax wants absolute local paths (runs/tiny -> /abs/runs/tiny); gs:// stays as is.
  workdir = paths.as_path(paths.abspath(workdir))
  model = pretrain.make_model(config)
  tx = optim.make_optimizer(t)
  init_fn = pretrain.make_init_fn(model, config)
  abstract, shardings = train_lib.abstract_train_state(init_fn, tx, mesh, config.seed)
  # Before anything is written or compiled: the workdir is writable, has room, and holds
  # no checkpoint this config cannot continue (preflight.py).
  resume_note = preflight.check_workdir(config, workdir, workdir / CHECKPOINT_DIR,
                                        lambda: abstract)
  is_main = jax.process_index() == 0
  if is_main and resume_note:
    print(resume_note, flush=True)
  step_fn = train_lib.make_train_step(
      pretrain.make_compute_loss(model, t.nsp_loss_weight), pretrain.denominators, tx, mesh,
      shardings,
      grad_accum_steps=t.grad_accum_steps)
  # Compile once, up front, from shapes alone, and stop here (nothing allocated, nothing
  # written) if the step cannot fit the devices: one line with the memory and the fixes.
  batch_spec = pretrain.abstract_batch(config, mesh)
  compiled = compile_step(step_fn, abstract, batch_spec, config, mesh, is_main)
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  make_iterator = make_iterator or default_iterator

  from bert_jax import tokenization
  tokenizer = tokenization.load_tokenizer(config_lib.vocab_file(config), config.do_lower_case)
  if is_main:  # as bytes, under its own name: a SentencePiece .model stays one
    weights.copy_vocab(config_lib.vocab_file(config), str(workdir))

  ckpt = checkpoints.Checkpointer(workdir / CHECKPOINT_DIR, t.keep_checkpoints, t.async_checkpointing)
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
      state = checkpoints.warm_start(state, shardings, config)
  n_params = model_lib.count_params(state.params)
  eval_step = pretrain.make_eval_step(model, mesh, shardings.params)
  lr_fn = optim.learning_rate_schedule(t)
  # metrics.jsonl + TensorBoard, process 0; keys "train/loss", "eval/mlm_accuracy", ...
  writer = metrics.MetricWriter(str(workdir), is_main, resume_step=latest)

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
    state, step_metrics = compiled(state, batch)
    step += 1
    pending.append(step_metrics)
    if t_last is None:
      jax.block_until_ready(step_metrics)
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
        print(metrics.progress_line(step, t.num_steps, scalars, eta), flush=True)
      # NaN/Inf: skip (already done in the step) and report, or stop (health.py).
      health.apply_policy(t.nan_policy, host, step - len(host) + 1, skipped_before, ckpt,
                          is_main)
      skipped_before = scalars["skipped_steps"]
      summary["train"] = scalars
      summary["history"].append((step, scalars["loss"]))
      pending, t_last, steps_timed, paused = [], time.time(), 0, 0.0

    if t.eval_steps and (step % t.eval_every == 0 or step == t.num_steps):
      jax.block_until_ready(state.params)  # queued train steps are not evaluation time
      t0 = time.time()
      ev = pretrain.evaluate(eval_step, state.params,
                             make_iterator(config, tokenizer, "eval"), mesh, t.eval_steps,
                             t.nsp_loss_weight)
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
    print(f"done: step {step} in {metrics.format_duration(time.time() - t_start)}"
          + (f"; eval loss {ev['loss']:.4f}, mlm_acc {ev['mlm_accuracy']:.3f}, nsp_acc "
             f"{ev['nsp_accuracy']:.3f}" if ev else "")
          + f"; curves: python -m bert_jax.tools.plot --workdir={workdir}", flush=True)
  summary["params"] = state.params
  summary["state"] = state
  return summary
