"""Optimizers and learning-rate schedules: AdamW, LAMB and the original BERT AdamW.

All share BERT's recipe: global-norm clipping (1.0) before the update, linear warmup then
linear decay, and no weight decay on LayerNorm parameters and biases.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bert_jax.config import ConfigError


def learning_rate_schedule(train_cfg) -> optax.Schedule:
  """The original BERT schedule: lr * step/warmup during warmup, else lr * (1 - step/total).

  (Google's optimization.py: polynomial decay to 0 at num_train_steps, overridden by the
  linear warmup while step < num_warmup_steps.)
  """
  lr = float(train_cfg.learning_rate)
  warmup = int(train_cfg.warmup_steps)
  total = int(train_cfg.num_steps)
  if total <= 0:
    raise ConfigError(f"config.train.num_steps={total}: must be a positive number of steps.")
  if warmup < 0 or warmup > total:
    raise ConfigError(
        f"config.train.warmup_steps={warmup}: must be between 0 and num_steps={total}.")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    decayed = lr * jnp.maximum(0.0, 1.0 - step / total)
    if warmup == 0:
      return decayed
    return jnp.where(step < warmup, lr * step / warmup, decayed)

  return schedule


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params) -> Any:
  """True where weight decay applies: not LayerNorm scales/biases, not any bias."""
  def keep(path, _):
    name = _path_name(path)
    leaf = name.rsplit("/", 1)[-1]
    return not ("layer_norm" in name or leaf == "bias" or leaf == "mlm_output_bias")
  return jax.tree_util.tree_map_with_path(keep, params)


class BertAdamState(NamedTuple):
  mu: Any
  nu: Any


def scale_by_bert_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam moments WITHOUT bias correction, as Google's AdamWeightDecayOptimizer."""
  def init(params):
    zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)
    return BertAdamState(jax.tree_util.tree_map(zeros, params),
                         jax.tree_util.tree_map(zeros, params))

  def update(grads, state, params=None):
    del params
    mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, grads)
    updates = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, BertAdamState(mu, nu)

  return optax.GradientTransformation(init, update)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  """clip(global norm) -> {adamw | lamb | bert_adam} with the warmup/decay schedule."""
  sched = learning_rate_schedule(train_cfg)
  name = train_cfg.optimizer
  b1, b2, eps, wd = train_cfg.b1, train_cfg.b2, train_cfg.eps, train_cfg.weight_decay
  if name == "adamw":
    opt = optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  elif name == "lamb":
    opt = optax.lamb(sched, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask)
  elif name == "bert_adam":
    opt = optax.chain(scale_by_bert_adam(b1, b2, eps),
                      optax.add_decayed_weights(wd, mask=decay_mask),
                      optax.scale_by_learning_rate(sched))
  else:
    raise ConfigError(
        f"config.train.optimizer={name!r}: use 'adamw', 'lamb' or 'bert_adam' (the original "
        "BERT AdamW without bias correction).")
  if train_cfg.max_grad_norm and train_cfg.max_grad_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(train_cfg.max_grad_norm), opt)
  return opt
