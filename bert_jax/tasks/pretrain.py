"""The pre-training objective: masked-LM + next-sentence prediction, as the original BERT.

Loss = MLM cross-entropy averaged over the real predictions (masked_lm_weights = 1; the
padded prediction slots weigh 0; denominator + 1e-5 as in the original's
`get_masked_lm_output`) + NSP cross-entropy averaged over the sequences. Everything is
float32 and jit-friendly. `pretraining_sums` gives the additive pieces (for gradient
accumulation and exact evaluation over many batches); `pretraining_loss` the means of one
batch.

The rest wires the objective to the model and the generic sharded step (train_lib): the
model and its initialiser, the loss the train step differentiates, the eval step, and the
abstract batch that compiling (preflight, tools/aot.py) needs. The loop is train.py.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib
from bert_jax import optim, partitioning, train_lib


def vocab_cross_entropy(logits: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-prediction cross-entropy and hit (1.0 where the target has the top logit).

  Same values as optax's integer-label cross-entropy and argmax == ids (but for exact
  ties), written so that nothing gathers from or scatters into the [.., vocab] logits: the
  target logit is a one-hot product, so the backward pass is one fused elementwise
  softmax - one_hot, and the hit reuses the row max of the log-sum-exp instead of a
  second (value, index) reduction. On XLA:CPU that took the tiny-model step of
  benchmarks/train_step.py (B32 S128, vocab 30522) from 301 to 271 ms.
  """
  onehot = jax.nn.one_hot(ids, logits.shape[-1], dtype=logits.dtype)
  row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  lse = jnp.log(jnp.sum(jnp.exp(logits - row_max[..., None]), axis=-1)) + row_max
  target = jnp.sum(logits * onehot, axis=-1)
  hit = jax.lax.stop_gradient((target >= row_max).astype(jnp.float32))
  return lse - target, hit


def pretraining_sums(mlm_logits: jax.Array, nsp_logits: jax.Array,
                     batch: dict) -> dict[str, jax.Array]:
  """Sums over the batch: MLM/NSP cross-entropy, correct predictions, counts.

  mlm_logits [B,P,V] at masked_lm_positions, nsp_logits [B,2]; batch has masked_lm_ids
  [B,P], masked_lm_weights [B,P] and next_sentence_labels [B] or [B,1] (0 = IsNext).
  """
  w = batch["masked_lm_weights"].astype(jnp.float32)
  ids = batch["masked_lm_ids"]
  labels = batch["next_sentence_labels"].reshape(-1)
  # float32 at least (float64 logits of a float64 model stay float64).
  mlm_logits = mlm_logits.astype(jnp.promote_types(mlm_logits.dtype, jnp.float32))
  nsp_logits = nsp_logits.astype(jnp.promote_types(nsp_logits.dtype, jnp.float32))
  mlm_xent, mlm_hit = vocab_cross_entropy(mlm_logits, ids)
  nsp_xent = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, labels)
  return {
      "mlm_loss": jnp.sum(mlm_xent * w),
      "mlm_correct": jnp.sum(mlm_hit * w),
      "mlm_weight": jnp.sum(w),
      "nsp_loss": jnp.sum(nsp_xent),
      "nsp_correct": jnp.sum(jnp.argmax(nsp_logits, -1) == labels).astype(jnp.float32),
      "nsp_count": jnp.float32(labels.shape[0]),
  }


def denominators_from_sums(sums: dict) -> dict[str, jax.Array]:
  """Normalisers: real MLM predictions (+1e-5, as the original) and sequences."""
  return {"mlm": sums["mlm_weight"] + 1e-5, "nsp": sums["nsp_count"]}


def means(sums: dict, den: dict, nsp_weight: float = 1.0) -> dict[str, jax.Array]:
  """Sums -> mean losses and accuracies; loss = MLM mean + nsp_weight x NSP mean
  (config.train.nsp_loss_weight; 0 is the paper's "No NSP" ablation)."""
  m = {"mlm_loss": sums["mlm_loss"] / den["mlm"],
       "mlm_accuracy": sums["mlm_correct"] / den["mlm"],
       "nsp_loss": sums["nsp_loss"] / den["nsp"],
       "nsp_accuracy": sums["nsp_correct"] / den["nsp"]}
  m["loss"] = m["mlm_loss"] + nsp_weight * m["nsp_loss"] if nsp_weight else m["mlm_loss"]
  return m


def pretraining_loss(mlm_logits: jax.Array, nsp_logits: jax.Array,
                     batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total loss, {mlm_loss, nsp_loss, mlm_accuracy, nsp_accuracy}) of one batch."""
  sums = pretraining_sums(mlm_logits, nsp_logits, batch)
  metrics = means(sums, denominators_from_sums(sums))
  return metrics.pop("loss"), metrics


# ---------------------------------------------------------------------------------------
# Model, loss, eval step
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
  return model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                     batch["attention_mask"], batch["masked_lm_positions"],
                     deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})


def make_compute_loss(model, nsp_weight: float = 1.0) -> train_lib.ComputeLoss:
  """The train_lib loss: additive over micro-batches (sums / full-batch denominators);
  nsp_weight scales the NSP term (0: MLM only, its gradient never reaches the NSP head)."""
  def compute_loss(params, batch, rng, den):
    mlm_logits, nsp_logits = _apply(model, params, batch, False, rng)
    m = means(pretraining_sums(mlm_logits, nsp_logits, batch), den, nsp_weight)
    loss = m.pop("loss")
    return loss, m
  return compute_loss


def make_eval_step(model, mesh, params_shardings):
  """Jitted, sharded (params, batch) -> sums of pretraining_sums (no dropout)."""
  def apply(params, batch):
    mlm_logits, nsp_logits = _apply(model, params, batch, True)
    return pretraining_sums(mlm_logits, nsp_logits, batch)
  return train_lib.make_predict_step(apply, mesh, params_shardings)


def evaluate(eval_step, params, batches, mesh, num_batches: int,
             nsp_weight: float = 1.0) -> dict[str, float]:
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
  result = means(total, denominators_from_sums(total), nsp_weight)
  return {k: float(v) for k, v in result.items()}


def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes/sharding of one global pre-training batch (the data pipeline's keys)."""
  b, s = config.train.batch_size, config.data.max_seq_length
  p = config.data.max_predictions_per_seq
  sh = partitioning.batch_sharding(mesh)
  spec = {"input_ids": ((b, s), jnp.int32), "attention_mask": ((b, s), jnp.int32),
          "token_type_ids": ((b, s), jnp.int32), "masked_lm_positions": ((b, p), jnp.int32),
          "masked_lm_ids": ((b, p), jnp.int32), "masked_lm_weights": ((b, p), jnp.float32),
          "next_sentence_labels": ((b,), jnp.int32)}
  return {k: jax.ShapeDtypeStruct(shape, dt, sharding=sh) for k, (shape, dt) in spec.items()}


def build_step(config, mesh):
  """-> (train step with .jitted, abstract sharded state): what train.py runs, from shapes."""
  model = make_model(config)
  tx = optim.make_optimizer(config.train)
  state, shardings = train_lib.abstract_train_state(
      make_init_fn(model, config), tx, mesh, config.seed)
  step = train_lib.make_train_step(
      make_compute_loss(model, config.train.nsp_loss_weight), denominators, tx, mesh, shardings,
      grad_accum_steps=config.train.grad_accum_steps)
  return step, state

