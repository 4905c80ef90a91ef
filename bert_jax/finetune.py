"""The fine-tuning loop shared by GLUE, SQuAD and SWAG (and any sentence(-pair) task).

A task supplies its data, model head, per-example loss, metrics and prediction files (the
`Task` protocol below); `run(config, workdir, task)` does the rest the same way for all:
load the pretrained checkpoint (checkpoints.load_pretrained) and check its vocabulary,
featurize, train with the paper's recipe (AdamW, 10% warmup, linear decay, dropout 0.1)
on train_lib's sharded step, evaluate on dev after every epoch, keep the best params,
predict the test splits with them, and write metrics.jsonl, TensorBoard events,
results.json and prediction files into the workdir. `sweep` repeats `run` over learning
rates and seeds and prints one table (the paper's restarts, best on dev).

Preemption (docs/reliability.md): the loop's whole state -- params, optimizer state, step,
dropout RNG, the data position inside the epoch, every evaluation so far, the best one and
the train metrics not yet logged -- is checkpointed asynchronously by
checkpoints.FinetuneCheckpointer every `finetune.checkpoint_every` steps, after every
evaluation and at the step after a SIGTERM (or JAX's preemption notice on several hosts);
the latest `finetune.keep_checkpoints` are kept, plus the one holding the best params. A
rerun of the same command resumes from the latest checkpoint to the same results, bit for
bit on CPU; a finished run (results.json, written last) is only read; a workdir holding a
run of another config is refused, naming the keys, unless `finetune.overwrite`. Sweeps
resume run by run, and test-set prediction resumes from its partial files.

Batches are grouped by length: every batch is cut to a bucket length (the longest row,
rounded up to `bucket_multiple`), so short-sentence tasks do not pay for max_seq_length.
Rows added to fill a batch carry `example_weight` 0 and are dropped from predictions, so
training losses and dev metrics are exact. Feature dicts use the model's argument names:
input_ids, token_type_ids, attention_mask ([N, S] or [N, C, S]), labels, example_weight.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import metrics
from bert_jax import checkpoints, compile_cache, weights, optim, partitioning, paths, train_lib
from bert_jax import config as config_lib
from bert_jax.config import ConfigError
# Features and batching live in data/batching.py; re-exported here, the tasks' one import.
from bert_jax.data.batching import (MODEL_INPUTS, batch_keys, bucket_length,  # noqa: F401
                                    encode_sentence_pairs, eval_batch_indices, make_batch,
                                    num_examples, sequence_lengths, train_batch_indices,
                                    truncate_seq_pair)
from bert_jax import reruns
# Prediction and reruns live in prediction.py and reruns.py; re-exported for the tasks.
from bert_jax.prediction import predict, predict_resumable  # noqa: F401
from bert_jax.reruns import (CONFIG_FILE, PARTIAL_DIR, RESULTS_FILE, SWEEP_FILE,  # noqa: F401
                             FinetuneError, config_differences, finished_results,
                             run_record, stop_hook, stopped)
from bert_jax.model import BertConfig
from bert_jax.tokenization import load_tokenizer


class Task(Protocol):
  """What a fine-tuning task provides to `run` (see tasks/glue.py for a full example).

  Attributes:
    name: short name used in logs and file names ("mrpc", "squad", "swag").
    selection_metric: "<eval split>/<metric>" maximised to pick the best epoch/run.
    train_split, eval_splits, predict_splits: split names passed to load_examples;
      eval splits have labels, predict splits may not.
    sequence_keys (optional): feature keys whose LAST axis is the sequence (cut to the
      bucket length); default MODEL_INPUTS.
    output_dir (optional): where test prediction files go (default workdir/submission).
  """
  name: str
  selection_metric: str
  train_split: str
  eval_splits: Sequence[str]
  predict_splits: Sequence[str]

  def load_examples(self, split: str) -> Sequence[Any]:
    """The examples of a split (raise a clear error for a missing/bad file)."""

  def featurize(self, examples: Sequence[Any], tokenizer, max_seq_length: int
                ) -> dict[str, Any]:
    """Examples -> {MODEL_INPUTS..., labels, ...: numpy [N, ...]}; non-array values are
    kept on the host and handed back to evaluate/write_predictions."""

  def make_model(self, bert_config: BertConfig) -> nn.Module:
    """The Flax model; called as model(input_ids, token_type_ids, attention_mask,
    deterministic) and holding the encoder under params['bert']."""

  def example_losses(self, outputs: Any, batch: dict[str, jax.Array]
                     ) -> dict[str, jax.Array]:
    """Per-example values [B] ('loss' required, e.g. 'accuracy' optional); the loop
    weights them by example_weight and averages over the real rows of the batch."""

  def evaluate(self, outputs: Any, examples: Sequence[Any], features: dict[str, Any],
               split: str) -> dict[str, float]:
    """Metrics over a whole split from the stacked outputs (padding rows removed)."""

  def write_predictions(self, outputs: Any, examples: Sequence[Any],
                        features: dict[str, Any], split: str, output_dir: str) -> list[str]:
    """Writes prediction file(s) for a split into output_dir; returns their paths."""

  # Optional: def degenerate(self, outputs, examples, features, split, metrics) -> str | None
  # names predictions that collapsed (all one class, all no-answer, a constant score;
  # tasks/degenerate.describe), given the split's metrics from evaluate; run() shows it on
  # the eval and summary lines and writes the best eval's into results.json.


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Model, checkpoint and vocabulary
# ---------------------------------------------------------------------------------------

def load_init(config) -> tuple[ml_collections.ConfigDict, dict | None, str]:
  """(config.model with the checkpoint's architecture, pretrained params or None, vocab).

  Without config.init_checkpoint the model is trained from scratch with config.model
  (tests, ablations); config.vocab_file is then required.
  """
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  params = None
  path = config.init_checkpoint
  if path:
    # checkpoints.resolve: every spelling (Hub id, TF prefix/.zip, workdirs), one error
    # listing what was tried; the checkpoint's casing must agree with the config's.
    ckpt_cfg, params = checkpoints.load_pretrained(path, config.do_lower_case)
    for k in config_lib.ARCHITECTURE_KEYS:
      model_cfg[k] = ckpt_cfg[k]
  vocab = config.vocab_file or (checkpoints.vocab_file_of(path) if path else "")
  if not vocab:
    raise FinetuneError(
        f"no vocabulary: init_checkpoint {path or '(none)'} has no vocab.txt beside it; "
        "set --config.vocab_file=PATH/vocab.txt.")
  return model_cfg, params, vocab


def _fill_missing(pretrained: dict, initial: Any, path: str = "bert") -> dict:
  """Pretrained subtree with params it lacks (e.g. a checkpoint without a pooler) taken
  from the fresh initialisation, each named in a log line."""
  out = {}
  for k, v in initial.items():
    if k in pretrained:
      out[k] = (_fill_missing(pretrained[k], v, f"{path}/{k}") if isinstance(v, dict)
                else pretrained[k])
    else:
      metrics.log(f"  {path}/{k}: not in the checkpoint, randomly initialised")
      out[k] = jax.tree_util.tree_map(np.asarray, v)
  return out


def init_params_fn(model: nn.Module, features: dict[str, Any]) -> Callable:
  """rng -> the model's (boxed) params; shapes from a short example of `features`."""
  example = {k: np.zeros((1,) + v.shape[1:-1] + (min(8, v.shape[-1]),), np.int32)
             for k, v in features.items() if k in MODEL_INPUTS}
  return lambda rng: model.init(rng, example["input_ids"], example["token_type_ids"],
                                example["attention_mask"])["params"]


def init_state(model: nn.Module, features: dict[str, Any], tx, mesh, seed: int,
               pretrained: dict | None = None, source: str = ""):
  """Sharded train state for `model` (shapes from `features`), with the encoder replaced
  by pretrained['bert'] when given; returns (state, shardings)."""
  state, shardings = train_lib.create_train_state(init_params_fn(model, features), tx, mesh,
                                                  seed)
  if pretrained is not None:
    subtree = _fill_missing(pretrained["bert"], state.params["bert"])
    state = train_lib.load_pretrained_subtree(state, shardings, subtree, "bert")
    metrics.log(f"loaded the encoder from {source}")
  return state, shardings


# ---------------------------------------------------------------------------------------
# Loss and steps
# ---------------------------------------------------------------------------------------

def apply_model(model: nn.Module, params, batch: dict, deterministic: bool = True,
                dropout_rng=None):
  """model(input_ids, token_type_ids, attention_mask) on a feature batch."""
  rngs = None if deterministic else {"dropout": dropout_rng}
  return model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                     batch["attention_mask"], deterministic=deterministic, rngs=rngs)


def make_compute_loss(task: Task, model: nn.Module):
  """train_lib's (compute_loss, denominators_fn) from task.example_losses: weighted sums
  over the micro-batch divided by the real rows of the whole batch (exact accumulation)."""

  def compute_loss(params, batch, dropout_rng, denominators):
    outputs = apply_model(model, params, batch, deterministic=False, dropout_rng=dropout_rng)
    values = task.example_losses(outputs, batch)
    w = batch["example_weight"]
    sums = {k: jnp.sum(v.astype(jnp.float32) * w) / denominators["n"]
            for k, v in values.items()}
    return sums.pop("loss"), sums

  def denominators_fn(batch):
    return {"n": jnp.maximum(jnp.sum(batch["example_weight"]), 1.0)}

  return compute_loss, denominators_fn


# ---------------------------------------------------------------------------------------
# Memory preflight: the biggest batches, compiled before the first step
# ---------------------------------------------------------------------------------------

def train_batch_plan(lengths: np.ndarray, batch_size: int, seed: int, window: int,
                     total: int) -> list[np.ndarray]:
  """The row indices of each of the `total` train steps, as run() will draw them."""
  plan, epoch = [], 0
  while len(plan) < total:
    batches = train_batch_indices(lengths, batch_size, seed, epoch, window)
    if not batches:
      break
    plan.extend(batches)
    epoch += 1
  return plan[:total]


def _batch_spec(features: dict[str, Any], rows: np.ndarray, batch_size: int,
                bucket_multiple: int, seq_keys, keys, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of the global batch make_batch cuts for the longest of `rows` (no copy)."""
  lengths = sequence_lengths(features)
  longest = np.asarray([rows[int(np.argmax(lengths[rows]))]])
  one = make_batch(features, longest, 1, bucket_multiple, seq_keys, keys, lengths)
  sh = partitioning.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype, sharding=sh)
          for k, v in one.items()}


def _shape_text(spec: dict) -> str:
  ids = spec["input_ids"].shape
  return (f"{ids[1]} choices x " if len(ids) == 3 else "") + f"seq {ids[-1]}"


def compile_checked_steps(config, mesh, abstract_state, train_step, predict_fn,
                          train_features, plan, eval_features, seq_keys):
  """(train_step, predict_fn) with their biggest batches compiled up front and checked
  against the devices' memory (preflight.DoesNotFitError: one line with the fixes)."""
  from bert_jax import preflight
  ft = config.finetune
  devices = mesh.devices.flat
  if plan:
    spec = _batch_spec(train_features, np.concatenate(plan), int(config.train.batch_size),
                       int(ft.bucket_multiple), seq_keys, batch_keys(train_features), mesh)
    with partitioning.activate(mesh):
      lowered = train_step.jitted.lower(abstract_state, spec)
    hints = preflight.train_hints(config, mesh, abstract_state, _shape_text(spec))
    train_step = train_lib.precompiled(
        train_step, preflight.compile_checked(lowered, devices, hints), spec)
  # Eval/test batches: the longest row of any split, while the train state (besides the
  # params it reads: the optimizer state and the best params so far) stays resident.
  longest = max(eval_features, key=lambda f: int(sequence_lengths(f).max()), default=None)
  if longest is not None:
    predict_fn = compile_checked_predict(
        predict_fn, abstract_state.params, longest, np.arange(num_examples(longest)),
        int(ft.eval_batch_size), int(ft.bucket_multiple), seq_keys, mesh,
        resident_bytes=preflight.bytes_per_device(abstract_state))
  return train_step, predict_fn


def compile_checked_predict(predict_fn, params, features, rows, batch_size: int,
                            bucket_multiple: int, seq_keys, mesh, *, what="eval step",
                            resident_bytes: int = 0, allocated_bytes: int = 0):
  """predict_fn with the batch of the longest of `rows` compiled up front and checked
  against the devices' memory (preflight.DoesNotFitError: one line with the fixes).

  Args:
    params: the params (arrays, or ShapeDtypeStructs before they are allocated).
    resident_bytes: bytes per device the run holds meanwhile besides `params`.
    allocated_bytes: bytes per device of `params` already allocated (0 if abstract).
  """
  from bert_jax import preflight
  keys = [k for k in MODEL_INPUTS if k in features]
  spec = _batch_spec(features, rows, batch_size, bucket_multiple, seq_keys, keys, mesh)
  with partitioning.activate(mesh):
    lowered = predict_fn.jitted.lower(params, spec)
  hints = preflight.MemoryHints(
      what=what, batch_size=batch_size, batch_flag="--config.finetune.eval_batch_size",
      batch_shards=partitioning.data_parallel_size(mesh), shape=_shape_text(spec),
      fixed_bytes=preflight.bytes_per_device(params), resident_bytes=resident_bytes)
  compiled = preflight.compile_checked(lowered, mesh.devices.flat, hints,
                                       allocated_bytes=allocated_bytes)
  return train_lib.precompiled(predict_fn, compiled, spec)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Split:
  examples: Sequence[Any]
  features: dict[str, Any]


def _load_split(task: Task, split: str, tokenizer, max_seq_length: int,
                cache: dict | None, limit: int = 0) -> _Split:
  key = (task.name, split, max_seq_length, getattr(tokenizer, "vocab_file", ""), limit)
  if cache is not None and key in cache:
    return cache[key]
  t0 = time.time()
  examples = task.load_examples(split)
  if limit:
    examples = examples[:limit]
  features = task.featurize(examples, tokenizer, max_seq_length)
  features.setdefault("example_weight", np.ones(num_examples(features), np.float32))
  lengths = sequence_lengths(features)
  metrics.log(f"{task.name}/{split}: {len(examples)} examples -> {num_examples(features)} "
      f"features, mean length {lengths.mean():.1f} (max {lengths.max()}), "
      f"{time.time() - t0:.1f}s")
  out = _Split(examples, features)
  if cache is not None:
    cache[key] = out
  return out


def _select(metrics: dict[str, float], key: str) -> float:
  if key not in metrics:
    raise FinetuneError(
        f"task selection_metric {key!r} is not among the dev metrics {sorted(metrics)}.")
  v = float(metrics[key])
  return v if math.isfinite(v) else -math.inf


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def run(config, workdir: str, task: Task, *, cache: dict | None = None,
        should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
  """Fine-tunes `task` per `config` (with config.finetune); returns the results dict.

  Results: {'task', 'best_step', 'best_epoch', 'best': {split/metric: value},
  'degenerate': None or what is wrong with the best eval's predictions (e.g. "all 408 dev
  predictions are class 1 (...)"), 'history': [eval records], 'predictions': {split:
  [paths]}, 'num_steps', 'train_seconds', 'learning_rate', 'seed', 'config'}; also
  written to workdir/results.json, last (a finished run: a rerun only reads it).

  The loop state is checkpointed (checkpoints.FinetuneCheckpointer) every
  finetune.checkpoint_every steps, after every evaluation and when `should_stop` (default:
  SIGTERM, preemption.py) says so; a rerun with the same workdir resumes from the latest
  checkpoint to the same results, bit for bit. When stopped, returns {'stopped_early':
  True, 'step', 'task'} without writing results.json.
  """
  with stop_hook(should_stop) as stop_fn:
    return _run(config, workdir, task, cache, stop_fn)


def _run(config, workdir: str, task: Task, cache: dict | None,
         should_stop: Callable[[], bool]) -> dict[str, Any]:
  ft = config.finetune
  t_start = time.time()
  compile_cache.enable(config.train.get("compilation_cache_dir", ""))
  paths.makedirs(workdir)
  record = run_record(config, task)
  if ft.overwrite:
    reruns.clear_run(workdir)
  else:
    done = finished_results(workdir, record)
    if done is not None:
      metrics.log(f"{task.name}: finished earlier in {workdir} (best {done['selection_metric']}"
                  f"={done['score']:.4f} at step {done['best_step']}); read from "
                  f"{RESULTS_FILE}")
      return done
  # orbax wants absolute local paths; gs:// stays as is.
  absolute = os.path.abspath(workdir)  # io: local-only (only used for a local workdir)
  ckpt_dir = paths.join(workdir if paths.is_remote(workdir) else absolute,
                        checkpoints.RUN_CHECKPOINT_DIR)
  latest = paths.latest_checkpoint_step(workdir)
  if latest is not None:
    reruns.check_same_run(checkpoints.saved_config(paths.join(ckpt_dir, str(latest))), record,
                    workdir, f"a run checkpointed at step {latest}")

  model_cfg, pretrained, vocab_file = load_init(config)
  bert_config = BertConfig.from_config(model_cfg)
  max_seq_length = int(config.data.max_seq_length)
  if max_seq_length > bert_config.max_position_embeddings:
    raise ConfigError(
        f"config.data.max_seq_length={max_seq_length} exceeds the checkpoint's "
        f"max_position_embeddings={bert_config.max_position_embeddings}.")
  tokenizer = load_tokenizer(vocab_file, config.do_lower_case)
  weights.check_vocab(vocab_file, model_cfg, checkpoint=config.init_checkpoint,
                      checkpoint_vocab=(checkpoints.vocab_file_of(config.init_checkpoint)
                                        if config.init_checkpoint else ""))

  mesh = partitioning.make_mesh(config.mesh)
  batch_size = int(config.train.batch_size)
  eval_batch_size = int(ft.eval_batch_size)
  partitioning.check_batch_size(batch_size, mesh, micro_steps=config.train.grad_accum_steps)
  partitioning.check_batch_size(eval_batch_size, mesh, key="config.finetune.eval_batch_size")
  seq_keys = tuple(getattr(task, "sequence_keys", MODEL_INPUTS))

  train = _load_split(task, task.train_split, tokenizer, max_seq_length, cache,
                      int(ft.max_train_examples))
  evals = {s: _load_split(task, s, tokenizer, max_seq_length, cache) for s in task.eval_splits}
  # Test files are read now too, so a missing file or bad row fails before training.
  tests = {s: _load_split(task, s, tokenizer, max_seq_length, cache)
           for s in task.predict_splits}
  n_train = num_examples(train.features)
  steps_per_epoch = -(-n_train // batch_size)
  total = int(math.ceil(steps_per_epoch * float(ft.num_epochs)))
  if ft.max_steps:
    total = min(total, int(ft.max_steps))
  total = max(total, 1)
  train_cfg = ml_collections.ConfigDict(config.train.to_dict())
  train_cfg.num_steps = total
  train_cfg.warmup_steps = int(total * float(ft.warmup_proportion))
  tx = optim.make_optimizer(train_cfg)

  model = task.make_model(bert_config)
  abstract, shardings = train_lib.abstract_train_state(
      init_params_fn(model, train.features), tx, mesh, int(config.seed))
  if hasattr(task, "compute_loss") and hasattr(task, "denominators_fn"):
    compute_loss, denominators_fn = task.compute_loss, task.denominators_fn
  else:
    compute_loss, denominators_fn = make_compute_loss(task, model)
  train_step = train_lib.make_train_step(compute_loss, denominators_fn, tx, mesh, shardings,
                                         grad_accum_steps=int(config.train.grad_accum_steps))
  predict_fn = train_lib.make_predict_step(
      lambda p, b: apply_model(model, p, b), mesh, shardings.params)
  # The biggest train and eval batches this run will see, compiled now, before anything
  # is allocated or written: a run too big for the devices stops here with one line
  # (preflight.check_memory_fits); the loops reuse these programs.
  train_step, predict_fn = compile_checked_steps(
      config, mesh, abstract, train_step, predict_fn, train.features,
      train_batch_plan(sequence_lengths(train.features), batch_size, int(config.seed),
                       int(ft.group_by_length_window), total),
      [d.features for d in (*evals.values(), *tests.values())], seq_keys)

  # Best params are a device copy (sharded like the state): one jitted copy, no host trip.
  copy_params = jax.jit(lambda p: jax.tree_util.tree_map(jnp.copy, p),
                        out_shardings=shardings.params)
  ckpt = checkpoints.FinetuneCheckpointer(ckpt_dir, int(ft.keep_checkpoints),
                                          bool(config.train.async_checkpointing))
  writer = None
  try:
    # The loop's own state besides the train state; checkpointed as the `data` item.
    loop = {"position": 0, "epoch": 0, "batch": 0, "history": [], "best": None,
            "pending": [], "train_seconds": 0.0, "eval_seconds": 0.0}
    best_params, best_outputs = None, {}
    if latest is not None:
      state, loop = ckpt.restore(latest, abstract)
      best = loop["best"]
      if best is not None:
        ckpt.set_best(best["step"])
        best_params = (copy_params(state.params) if best["step"] == latest else
                       ckpt.restore_params(best["step"], abstract.params))
      metrics.log(f"resumed from {ckpt.directory}/{latest}: epoch {loop['epoch']}, batch "
                  f"{loop['batch']} of it, {len(loop['history'])} evaluation(s) done"
                  + (f", best so far at step {best['step']}" if best else ""))
    else:
      state, _ = init_state(model, train.features, tx, mesh, int(config.seed), pretrained,
                            config.init_checkpoint)

    # metrics.jsonl / TensorBoard: what an interrupted attempt wrote after the checkpoint
    # resumed from (or all of it, without one) is dropped, so every step is logged once.
    writer = metrics.MetricWriter(workdir, resume_step=latest or 0)
    if jax.process_index() == 0:
      paths.write_text(paths.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
    metrics.log(f"{task.name}: {n_train} train examples, batch {batch_size}, {steps_per_epoch} "
        f"steps/epoch, {total} steps ({train_cfg.warmup_steps} warmup), lr "
        f"{train_cfg.learning_rate:g}, seed {config.seed}, mesh {dict(mesh.shape)}")

    lengths = sequence_lengths(train.features)
    train_keys = batch_keys(train.features)
    n_local = batch_size // jax.process_count()
    lo = jax.process_index() * n_local
    step = int(loop["position"])
    first_step = step  # where this process started (the ETA's base; save() moves position)
    pending = list(loop["pending"])  # step metrics since the last log line
    t_train, t_log, seen_since = time.time(), time.time(), 0
    eval_seconds = 0.0
    schedule = jax.jit(optim.learning_rate_schedule(train_cfg))  # one compile, for logs
    checkpoint_every = max(1, int(ft.checkpoint_every or total))

    def evaluate(at_step: int, at_epoch: float):
      nonlocal best_params, best_outputs, eval_seconds
      # The train steps dispatched since the last log line finish first and count as
      # training time (timing from dispatch would book them to evaluation).
      jax.block_until_ready(state.params)
      t0 = time.time()
      record_, outputs, notes = {}, {}, []
      for split, data in evals.items():
        out = predict(predict_fn, state.params, data.features, eval_batch_size, mesh,
                      int(ft.bucket_multiple), seq_keys)
        outputs[split] = out
        split_metrics = task.evaluate(out, data.examples, data.features, split)
        for k, v in split_metrics.items():
          record_[f"{split}/{k}"] = float(v)
        if hasattr(task, "degenerate"):
          notes.append(task.degenerate(out, data.examples, data.features, split,
                                       split_metrics))
      degenerate = "; ".join(n for n in notes if n) or None
      score = _select(record_, task.selection_metric)
      best = loop["best"]
      improved = best is None or score > best["score"]
      if improved:
        loop["best"] = {"score": score, "step": at_step, "epoch": at_epoch, "record": record_,
                        "degenerate": degenerate}
        best_params = copy_params(state.params)
        best_outputs = outputs
      writer.write(at_step, {**record_, "epoch": at_epoch})
      loop["history"].append({"step": at_step, "epoch": at_epoch, **record_})
      shown = "  ".join(f"{k}={v:.4f}" for k, v in record_.items())
      metrics.log(f"eval step {at_step} (epoch {at_epoch:.2f}): {shown}"
          f"{'  *best*' if improved else ''}  [{time.time() - t0:.1f}s]"
          + (f"  DEGENERATE: {degenerate}" if degenerate else ""))
      eval_seconds += time.time() - t0

    def save(at_step: int) -> None:
      nonlocal pending
      pending = [{k: metrics.to_py(v) for k, v in m.items()} for m in jax.device_get(pending)]
      loop.update(position=at_step, pending=pending,
                  train_seconds=train_seconds_before + time.time() - t_train - eval_seconds,
                  eval_seconds=eval_seconds_before + eval_seconds)
      if loop["best"] is not None:
        ckpt.set_best(loop["best"]["step"])
      ckpt.save(at_step, state, loop, _RecordConfig(record))

    train_seconds_before = float(loop["train_seconds"])
    eval_seconds_before = float(loop["eval_seconds"])
    stop = False
    while step < total and not stop:
      batches = train_batch_indices(lengths, batch_size, int(config.seed), loop["epoch"],
                                    int(ft.group_by_length_window))
      for idx in batches[loop["batch"]:]:
        batch = make_batch(train.features, idx, batch_size, int(ft.bucket_multiple), seq_keys,
                           train_keys, lengths)
        local = {k: v[lo:lo + n_local] for k, v in batch.items()}
        state, step_metrics = train_step(state, train_lib.global_batch(local, mesh))
        step += 1
        loop["batch"] += 1
        seen_since += len(idx)
        pending.append(step_metrics)
        if step % int(config.train.log_every) == 0 or step == total:
          fetched = jax.device_get(pending)
          # float64 means of the float32 step values: the same whether they were kept on
          # the device or came back from a checkpoint's JSON.
          mean = {k: float(np.mean(np.asarray([m[k] for m in fetched], np.float64)))
                  for k in fetched[-1] if k != "skipped_steps"}
          now = time.time()
          rate = seen_since / max(now - t_log, 1e-9)
          elapsed = now - t_train - eval_seconds
          eta = elapsed / max(step - first_step, 1) * (total - step)
          mean.update(learning_rate=float(schedule(step - 1)), examples_per_sec=rate,
                      skipped_steps=int(fetched[-1]["skipped_steps"]))
          writer.write(step, {f"train/{k}": v for k, v in mean.items()})
          metrics.log(f"step {step}/{total} epoch {step / steps_per_epoch:.2f} loss "
              f"{mean['loss']:.4f} lr {mean['learning_rate']:.2e} {rate:.1f} ex/s "
              f"elapsed {metrics.format_duration(elapsed)} ETA {metrics.format_duration(eta)}")
          pending, t_log, seen_since = [], now, 0
        end_of_epoch = step % steps_per_epoch == 0
        evaluated = False
        if (step == total or end_of_epoch
            or (config.train.eval_every and step % int(config.train.eval_every) == 0)):
          evaluate(step, step / steps_per_epoch)
          evaluated = True
        # Every host asks at every step (orbax's preemption sync point on several hosts).
        stop = bool(should_stop()) or ckpt.reached_preemption(step)
        if evaluated or stop or step % checkpoint_every == 0 or step == total:
          save(step)
        if stop or step >= total:
          break
      else:
        loop["epoch"] += 1
        loop["batch"] = 0
    if stop:
      ckpt.wait()
      ckpt.close()
      writer.close()
      metrics.log(f"preempted: stopping at step {step}; checkpoint {ckpt.directory}/{step} "
                  "(the same command resumes from it)")
      return {"stopped_early": True, "step": step, "task": task.name}
    train_seconds = train_seconds_before + time.time() - t_train - eval_seconds

    best = loop["best"]
    score, best_step, best_epoch = best["score"], best["step"], best["epoch"]
    best_record, degenerate = best["record"], best["degenerate"]
    params = best_params
    predictions: dict[str, list[str]] = {}
    if ft.write_dev_predictions:
      dev_dir = paths.join(workdir, "predictions")
      for split, data in evals.items():
        # The best evaluation of an earlier attempt: the same program on the same params.
        out = best_outputs.get(split)
        if out is None:
          out = predict(predict_fn, params, data.features, eval_batch_size, mesh,
                        int(ft.bucket_multiple), seq_keys)
        predictions[split] = task.write_predictions(out, data.examples, data.features, split,
                                                    dev_dir)
    test_dir = getattr(task, "output_dir", None) or paths.join(workdir, "submission")
    for split, data in tests.items():
      partial = paths.join(workdir, PARTIAL_DIR, split)
      out = predict_resumable(
          predict_fn, params, data.features, eval_batch_size, mesh, int(ft.bucket_multiple),
          seq_keys, partial, key=f"{task.name}/{split}: best step {best_step}, "
          f"{num_examples(data.features)} rows, batch {eval_batch_size}")
      predictions[split] = task.write_predictions(out, data.examples, data.features, split,
                                                  test_dir)
    if ft.save_best:
      checkpoints.save_params(paths.join(workdir, checkpoints.BEST_DIR), params, model_cfg)
    ckpt.wait()  # the final checkpoint is complete before the run counts as finished
    results = {
        "task": task.name, "selection_metric": task.selection_metric, "score": score,
        "best_step": best_step, "best_epoch": best_epoch, "best": best_record,
        "degenerate": degenerate,
        "history": loop["history"], "predictions": predictions, "num_steps": total,
        "train_seconds": train_seconds, "eval_seconds": eval_seconds_before + eval_seconds,
        "total_seconds": time.time() - t_start,
        "learning_rate": float(config.train.learning_rate), "seed": int(config.seed),
        "skipped_steps": int(jax.device_get(state.skipped_steps)),
        "resumed_from": latest, "config": record,
    }
    if jax.process_index() == 0:
      paths.write_json(paths.join(workdir, RESULTS_FILE), results)
      if paths.exists(paths.join(workdir, PARTIAL_DIR)):
        paths.rmtree(paths.join(workdir, PARTIAL_DIR))
    ckpt.close()
    writer.close()
    metrics.log(f"{task.name}: best {task.selection_metric}={score:.4f} at step {best_step} "
        f"(epoch {best_epoch:.2f})" + (f"; DEGENERATE: {degenerate}" if degenerate else "")
        + f"; trained {metrics.format_duration(train_seconds)}; predictions: "
        + ", ".join(p for ps in predictions.values() for p in ps))
    return results
  except BaseException:
    # Pending saves finish (a complete checkpoint is never torn) and threads stop.
    ckpt.close()
    if writer is not None:
      writer.close()
    raise


class _RecordConfig:
  """A run_record dict where Checkpointer.save expects a ConfigDict (its to_dict())."""

  def __init__(self, record: dict):
    self._record = record

  def to_dict(self) -> dict:
    return self._record


# ---------------------------------------------------------------------------------------
# Sweep over learning rates and seeds
# ---------------------------------------------------------------------------------------


def sweep(config, workdir: str, task: Task, learning_rates: Sequence[float] | None = None,
          seeds: Sequence[int] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
  """One `run` per (learning rate, seed) into workdir/lr{lr}_seed{s}; the run best on
  dev wins and its test predictions are copied to workdir/submission (or task.output_dir).

  Resumes at the run level: a finished run is read from its results.json, an interrupted
  one resumes from its checkpoint, so the table equals an uninterrupted sweep's. Stopped
  by SIGTERM, it returns {'stopped_early': True, 'runs', 'best': {'stopped_early': True}}.

  Returns {'runs': [results...], 'best': results of the best run, 'table': str}.
  """
  lrs = list(learning_rates if learning_rates is not None else config.finetune.sweep_learning_rates)
  seeds = list(seeds if seeds is not None else config.finetune.sweep_seeds)
  if not lrs or not seeds:
    raise ConfigError("config.finetune.sweep_learning_rates and sweep_seeds must be non-empty.")
  out_dir = getattr(task, "output_dir", None)
  cache: dict = {}
  runs = []
  with stop_hook(should_stop) as stop_fn:
    try:
      for lr in lrs:
        for seed in seeds:
          c = ml_collections.ConfigDict(config.to_dict())
          c.train.learning_rate = float(lr)
          c.seed = int(seed)
          run_dir = paths.join(workdir, f"lr{lr:g}_seed{seed}")
          if out_dir:  # every restart writes its own files; only the best is copied out.
            task.output_dir = paths.join(run_dir, "submission")
          metrics.log(f"=== sweep: lr {lr:g} seed {seed} -> {run_dir}")
          r = run(c, run_dir, task, cache=cache, should_stop=stop_fn)
          if stopped(r):
            return {"stopped_early": True, "runs": runs, "best": r, "table": ""}
          runs.append(r)
    finally:
      task.output_dir = out_dir
  best = max(runs, key=lambda r: r["score"])
  header = ["lr", "seed", "best epoch", *best["best"].keys(), "train time"]
  rows = [[f"{r['learning_rate']:g}", r["seed"], f"{r['best_epoch']:.2f}",
           *(r["best"].get(k, float("nan")) for k in best["best"]),
           metrics.format_duration(r["train_seconds"])] for r in runs]
  table = metrics.format_table(header, rows)
  dest = out_dir or paths.join(workdir, "submission")
  if jax.process_index() == 0:
    paths.makedirs(dest)
    for split, files in best["predictions"].items():
      if split in task.predict_splits:
        for p in files:
          paths.copy(p, paths.join(dest, paths.as_path(p).name))
    paths.write_json(paths.join(workdir, SWEEP_FILE), {"runs": runs, "best": best,
                                                       "table": table})
  metrics.log(f"sweep {task.name} ({task.selection_metric}; best: lr {best['learning_rate']:g} "
      f"seed {best['seed']})\n{table}")
  return {"runs": runs, "best": best, "table": table}
