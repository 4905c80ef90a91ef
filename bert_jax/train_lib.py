"""The generic sharded training machinery shared by pre-training and fine-tuning.

`create_train_state` initialises params and optimizer state directly into their
shardings (no host copy of the full model); `make_train_step` builds one `jax.jit` with
in/out shardings and donated state that accumulates gradients over micro-batches, skips
non-finite updates, and reports loss, grad norm and task metrics. Tasks only supply
`compute_loss` (additive over micro-batches) and `denominators_fn`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bert_jax import partitioning
from bert_jax.model import is_stacked, layers_layout

PyTree = Any
# compute_loss(params, micro_batch, dropout_rng, denominators) -> (loss, metrics), where loss
# and every metric are sums over the micro-batch divided by full-batch denominators, so that
# summing over micro-batches gives exactly the full-batch value.
ComputeLoss = Callable[[PyTree, dict, jax.Array, dict], tuple[jax.Array, dict]]


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array  # raw uint32[2] PRNG key: dropout key of step s = fold_in(rng, s).
  skipped_steps: jax.Array  # updates dropped because loss or gradients were not finite.


def create_train_state(init_params_fn: Callable[[jax.Array], PyTree],
                       tx: optax.GradientTransformation, mesh: Mesh, seed: int,
                       rules=None) -> tuple[TrainState, TrainState]:
  """Initialises the state sharded per the logical rules; returns (state, shardings)."""

  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = init_params_fn(params_rng)  # boxed (nn.Partitioned) params
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=dropout_rng,
                      skipped_steps=jnp.zeros((), jnp.int32))

  with partitioning.activate(mesh, rules):
    abstract = jax.eval_shape(init, jax.random.PRNGKey(seed))
    logical = nn.get_partition_spec(abstract)
    shardings = partitioning.logical_to_shardings(
        partitioning.strip_boxes(abstract), logical, mesh, rules)
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(
        jax.random.PRNGKey(seed))
  return state, shardings


def abstract_train_state(init_params_fn, tx, mesh: Mesh, seed: int = 0,
                         rules=None) -> tuple[TrainState, TrainState]:
  """Shapes and shardings of the state without allocating it (AOT compilation, restore)."""
  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = init_params_fn(params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=dropout_rng,
                      skipped_steps=jnp.zeros((), jnp.int32))
  # Only the key's shape matters; a concrete key made under a mesh of compile-only
  # devices (AOT for a TPU topology) would fail, so describe it abstractly.
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  with partitioning.activate(mesh, rules):
    abstract = jax.eval_shape(init, key)
    logical = nn.get_partition_spec(abstract)
    plain = partitioning.strip_boxes(abstract)
    shardings = partitioning.logical_to_shardings(plain, logical, mesh, rules)
  abstract_sharded = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, shardings)
  return abstract_sharded, shardings


def load_pretrained_subtree(state: TrainState, shardings: TrainState, subtree: PyTree,
                            key: str | None = "bert") -> TrainState:
  """Replaces params[key] (or all params if key is None) with `subtree`, placed on the
  shardings of the params it replaces; shapes must match exactly. The encoder layers of
  `subtree` may come in either layout (stacked or one subtree each): they are converted
  to the state's."""
  target = state.params if key is None else state.params[key]
  subtree = layers_layout(subtree, is_stacked(target))
  target_sh = shardings.params if key is None else shardings.params[key]
  flat_t, treedef = jax.tree_util.tree_flatten_with_path(target)
  src = dict(jax.tree_util.tree_flatten_with_path(subtree)[0])
  sh = jax.tree_util.tree_leaves(target_sh)
  new_leaves = []
  for (path, leaf), s in zip(flat_t, sh):
    name = jax.tree_util.keystr(path)
    if path not in src:
      raise ValueError(f"pretrained checkpoint has no parameter {key or ''}{name}")
    value = np.asarray(src[path])
    if value.shape != leaf.shape:
      raise ValueError(
          f"pretrained parameter {key or ''}{name} has shape {value.shape}, the model "
          f"expects {leaf.shape}: the checkpoint was trained with a different model config.")
    new_leaves.append(jax.device_put(value.astype(leaf.dtype), s))
  new = jax.tree_util.tree_unflatten(treedef, new_leaves)
  params = new if key is None else {**state.params, key: new}
  return state.replace(params=params)


def _split_micro(batch: dict, k: int) -> dict:
  return jax.tree_util.tree_map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)


def make_train_step(compute_loss: ComputeLoss, denominators_fn: Callable[[dict], dict],
                    tx: optax.GradientTransformation, mesh: Mesh, state_shardings: TrainState,
                    *, grad_accum_steps: int = 1, donate: bool = True,
                    rules=None):
  """One jitted, sharded step: (state, global batch) -> (new state, metrics).

  Gradients are summed over `grad_accum_steps` micro-batches (a lax.scan), so the update
  equals one step on the whole batch; a non-finite loss or gradient skips the update.
  """
  batch_sh = partitioning.batch_sharding(mesh)
  micro_sh = NamedSharding(mesh, P(None, *batch_sh.spec))

  def step(state: TrainState, batch: dict):
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    denominators = denominators_fn(batch)
    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
    if grad_accum_steps == 1:
      (loss, metrics), grads = grad_fn(state.params, batch, dropout_rng, denominators)
    else:
      micro = _split_micro(batch, grad_accum_steps)
      micro = jax.lax.with_sharding_constraint(micro, micro_sh)

      def body(carry, xs):
        i, mb = xs
        (l, m), g = grad_fn(state.params, mb, jax.random.fold_in(dropout_rng, i),
                            denominators)
        acc_l, acc_m, acc_g = carry
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
        return (acc_l + l, add(acc_m, m), add(acc_g, g)), None

      zeros_g = jax.tree_util.tree_map(jnp.zeros_like, state.params)
      lm_shape = jax.eval_shape(
          lambda: compute_loss(state.params, jax.tree_util.tree_map(lambda x: x[0], micro),
                               dropout_rng, denominators))
      zeros_l, zeros_m = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                lm_shape)
      (loss, metrics, grads), _ = jax.lax.scan(
          body, (zeros_l, zeros_m, zeros_g),
          (jnp.arange(grad_accum_steps), micro))
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update(params, opt_state, grads):
      updates, new_opt = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_opt

    # A branch, not a select of new vs old state: the select kept both copies of params
    # and both Adam moments alive (+190 MiB at BERT-Base, benchmarks/train_step.py).
    new_params, new_opt = jax.lax.cond(
        ok, apply_update, lambda params, opt_state, _: (params, opt_state),
        state.params, state.opt_state, grads)
    new_state = state.replace(
        step=state.step + 1, params=new_params, opt_state=new_opt,
        skipped_steps=state.skipped_steps + jnp.where(ok, 0, 1).astype(jnp.int32))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   skipped_steps=new_state.skipped_steps)
    return new_state, metrics

  jitted = jax.jit(step, in_shardings=(state_shardings, batch_sh),
                   out_shardings=(state_shardings, None),
                   donate_argnums=(0,) if donate else ())

  def run(state, batch):
    with partitioning.activate(mesh, rules):
      return jitted(state, batch)

  run.jitted = jitted  # for .lower(...) in AOT compilation and benchmarks.
  run.mesh = mesh
  return run


def make_predict_step(apply_fn: Callable[[PyTree, dict], Any], mesh: Mesh,
                      params_shardings: PyTree, rules=None):
  """Jitted, sharded inference: (params, batch) -> apply_fn(params, batch)."""
  jitted = jax.jit(apply_fn, in_shardings=(params_shardings, partitioning.batch_sharding(mesh)))

  def run(params, batch):
    with partitioning.activate(mesh, rules):
      return jitted(params, batch)

  run.jitted = jitted  # for .lower(...): the memory preflight compiles it up front.
  run.mesh = mesh
  return run


def batch_avals(batch: dict) -> dict[str, tuple]:
  """{key: (shape, dtype)} of a batch of arrays or ShapeDtypeStructs."""
  return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in batch.items()}


def precompiled(run_fn: Callable, compiled, batch_spec: dict) -> Callable:
  """`run_fn(x, batch)`, except that batches shaped like `batch_spec` run `compiled` (the
  same program, compiled ahead of time for the memory preflight: not compiled twice)."""
  want = batch_avals(batch_spec)

  def run(x, batch):
    return compiled(x, batch) if batch_avals(batch) == want else run_fn(x, batch)

  run.jitted = getattr(run_fn, "jitted", None)
  return run


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This host's numpy slice of the batch -> global jax.Arrays sharded on the batch axes."""
  sh = partitioning.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, np.asarray(v))
          for k, v in local_batch.items()}


def gather_to_host(tree):
  """Global (sharded) outputs -> numpy on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree_util.tree_map(np.asarray, tree)
