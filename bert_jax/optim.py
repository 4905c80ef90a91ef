"""Optimizers and learning-rate schedules: AdamW, LAMB and the original BERT AdamW.

All share BERT's recipe: global-norm clipping (1.0) before the update, linear warmup then
linear decay, and no weight decay on LayerNorm parameters and biases. LAMB (You et al.
2019, as the MLPerf BERT reference) also leaves LayerNorm parameters and biases out of
the layer-wise adaptation, and takes one trust ratio per tensor of the reference model:
per layer when the layers are stacked (scan_layers) and per Q, K and V in the fused
[embed, 3, heads, head_dim] projection. tests/test_optim_reference.py checks bert_adam and
LAMB against float64 transcriptions of their published definitions.
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
    # float32, or float64 in a float64 run (jax_enable_x64): its lr is then exact too.
    step = jnp.asarray(step, float)
    decayed = lr * jnp.maximum(0.0, 1.0 - step / total)
    if warmup == 0:
      return decayed
    return jnp.where(step < warmup, lr * step / warmup, decayed)

  return schedule


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _decays(name: str) -> bool:
  """The reference's exclusion by name ("LayerNorm", "layer_norm", "bias"): our LayerNorm
  modules are all named *layer_norm; biases are `bias` leaves and `mlm_output_bias`."""
  leaf = name.rsplit("/", 1)[-1]
  return not ("layer_norm" in name or leaf == "bias" or leaf == "mlm_output_bias")


def decay_mask(params) -> Any:
  """True where weight decay applies: not LayerNorm scales/biases, not any bias."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _decays(_path_name(path)), params)


def _per_tensor_axes(name: str, ndim: int) -> tuple[int, ...]:
  """Axes of a leaf that make up one tensor of the reference model (Google's names): all
  but the stacked-layers axis (scan_layers: [layers, ...]) and the q/k/v axis of the
  fused qkv kernel ([..., embed, 3, heads, head_dim])."""
  keep = set()
  if "/encoder/layers/" in f"/{name}/":
    keep.add(0)
  if name.endswith("qkv/kernel"):
    keep.add(ndim - 3)
  return tuple(a for a in range(ndim) if a not in keep)


def scale_by_layerwise_trust_ratio() -> optax.GradientTransformation:
  """LAMB's layer adaptation: update * ||w|| / ||update|| per reference tensor, 1 where
  either norm is 0, none on LayerNorm parameters and biases (the MLPerf BERT reference:
  exclude_from_layer_adaptation defaults to exclude_from_weight_decay).

  optax.scale_by_trust_ratio adapts every leaf with one ratio, LayerNorm and biases
  included: a bias that starts at 0 then moves by lr * ||bias|| per step, i.e. hardly at
  all, and the stacked layers or fused Q/K/V would share one ratio.
  """
  def update(updates, state, params=None):
    if params is None:
      raise ValueError("LAMB's trust ratio needs the params: tx.update(grads, state, params).")

    def scale(path, u, w):
      name = _path_name(path)
      if not _decays(name):
        return u
      axes = _per_tensor_axes(name, u.ndim)
      w_norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
      u_norm = jnp.sqrt(jnp.sum(jnp.square(u.astype(jnp.float32)), axis=axes, keepdims=True))
      ratio = jnp.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
      return (u * ratio).astype(u.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update)


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
    # optax.lamb with its trust ratio masked and per reference tensor (same state tree).
    opt = optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                      optax.add_decayed_weights(wd, mask=decay_mask),
                      scale_by_layerwise_trust_ratio(),
                      optax.scale_by_learning_rate(sched))
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
