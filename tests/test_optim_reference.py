"""bert_adam and LAMB against float64 NumPy transcriptions of their published definitions.

`Reference` below is written from the published equations, on Google-named tensors
(`bert/encoder/layer_0/attention/self/query/kernel`, ...), so that the exclusions by
name are the originals' regular expressions:

- bert_adam: Google's BERT `optimization.py` (`create_optimizer` +
  `AdamWeightDecayOptimizer`): clip by global norm 1.0; m = b1 m + (1-b1) g,
  v = b2 v + (1-b2) g^2, update = m / (sqrt(v) + eps) with NO bias correction, plus
  wd * param unless the name matches "LayerNorm", "layer_norm" or "bias"; param -=
  lr * update; lr = polynomial decay (power 1) from step 0 to 0 at num_train_steps,
  replaced by lr * step / warmup while step < warmup.
- lamb: You et al. 2019, Algorithm 2 (LAMB), as the MLPerf BERT reference
  (`lamb_optimizer_v1.LAMBOptimizer`): the same moments WITH bias correction
  m / (1 - b1^t), v / (1 - b2^t) (t = 1 at the first step; optax.scale_by_adam uses the
  same t), update = m_hat / (sqrt(v_hat) + eps) + wd * param (decay mask as above),
  trust ratio ||param|| / ||update|| per tensor (1 where either norm is 0; phi = the
  identity, as MLPerf), and no trust ratio on the excluded names either
  (exclude_from_layer_adaptation defaults to exclude_from_weight_decay); the same
  clipping and schedule.

Each is run for 20 steps in lockstep with bert_jax's optimizer (`optim.make_optimizer`)
on the 2-layer configs/tiny.py model: our optimizer's params give the gradient of a real
batch of the bundled corpus, and that same float32 gradient is fed to both, so the two
trajectories differ only by the optimizer's arithmetic, not by chaos in the model.

The tolerance is derived, per element, by a running first-order rounding-error analysis
of the float32 computation (`Float32Bound`), not tuned; the test also shows that it is
tight enough to reject each of a few near-miss definitions (no weight decay, decay on
LayerNorm, bias correction in bert_adam, HF's decay from the end of warmup, optax.lamb's
trust ratio on LayerNorm and biases, one ratio for the fused Q/K/V). LAMB is also checked
with the layers stacked (scan_layers), where each layer keeps its own trust ratio.
"""
from __future__ import annotations

import importlib.util
import math
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import config as config_lib, data, model as model_lib, optim, tokenization
from bert_jax import weights
from bert_jax.tasks import pretrain

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20
# Unit roundoff of float32 (round to nearest): |fl(x op y) - x op y| <= U |x op y|.
U = 2.0 ** -24
# The originals' exclude_from_weight_decay (and, for LAMB, exclude_from_layer_adaptation).
EXCLUDE = ("LayerNorm", "layer_norm", "bias")


# ---------------------------------------------------------------------------------------
# The references (float64), on Google-named tensors.
# ---------------------------------------------------------------------------------------

def _norm(x) -> float:
  """||x||_2 over all elements (as tf's linalg_ops.norm(var, ord=2) of a variable)."""
  x = np.ravel(x)
  return math.sqrt(float(np.einsum("i,i->", x, x)))  # (np.dot: OpenBLAS threads, slower)


def excluded(name: str) -> bool:
  """`_do_use_weight_decay` / `_do_layer_adaptation`: re.search of each pattern."""
  return any(re.search(r, name) is not None for r in EXCLUDE)


def learning_rate(step: int, init_lr: float, num_train_steps: int,
                  num_warmup_steps: int) -> float:
  """create_optimizer: tf.train.polynomial_decay(init_lr, global_step, num_train_steps,
  end_learning_rate=0.0, power=1.0, cycle=False), then the linear warmup from step 0."""
  decayed = init_lr * (1.0 - min(step, num_train_steps) / num_train_steps) ** 1.0
  if num_warmup_steps and step < num_warmup_steps:
    return init_lr * step / num_warmup_steps
  return decayed


def clip_by_global_norm(grads: dict, clip_norm: float = 1.0) -> tuple[dict, float]:
  """tf.clip_by_global_norm: t * clip_norm / max(global_norm, clip_norm)."""
  norm = math.sqrt(sum(_norm(g) ** 2 for g in grads.values()))
  return {k: g * clip_norm / max(norm, clip_norm) for k, g in grads.items()}, norm


class Reference:
  """Google's AdamWeightDecayOptimizer (lamb=False) or MLPerf's LAMBOptimizer (lamb=True),
  each behind create_optimizer's clipping and schedule. `step(grads)` also returns what
  `Float32Bound` needs: the clipped gradients and every intermediate of the update."""

  def __init__(self, params: dict, hp: dict, lamb: bool):
    self.p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
    self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
    self.hp, self.lamb, self.global_step = hp, lamb, 0

  def step(self, grads: dict) -> dict:
    hp = self.hp
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    grads, norm = clip_by_global_norm({k: np.asarray(g, np.float64) for k, g in grads.items()},
                                      hp["max_grad_norm"])
    lr = learning_rate(self.global_step, hp["learning_rate"], hp["num_steps"],
                       hp["warmup_steps"])
    t = self.global_step + 1  # beta1_power = b1^t: initialised to b1, multiplied after.
    c1, c2 = (1 / (1 - b1 ** t), 1 / (1 - b2 ** t)) if self.lamb else (1.0, 1.0)
    info = {"lr": lr, "t": t, "c1": c1, "c2": c2, "clipped": norm > hp["max_grad_norm"],
            "tensors": {}}
    for name, g in grads.items():
      p, m_old, v_old = self.p[name], self.m[name], self.v[name]
      m = b1 * m_old + (1 - b1) * g
      v = b2 * v_old + (1 - b2) * g * g
      update = (m * c1) / (np.sqrt(v * c2) + eps)
      decay = not excluded(name)
      if decay:
        update = update + wd * p
      ratio = 1.0
      if self.lamb and decay:
        w_norm, u_norm = _norm(p), _norm(update)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
      self.p[name] = p - ratio * lr * update
      self.m[name], self.v[name] = m, v
      info["tensors"][name] = dict(g=g, p=p, m_old=m_old, v_old=v_old, m=m, v=v,
                                   update=update, ratio=ratio, decay=decay)
    self.global_step += 1
    return info


# ---------------------------------------------------------------------------------------
# The tolerance: a running bound on |float32 result - exact result|, element by element.
# ---------------------------------------------------------------------------------------

def sum_rel_error(n: int) -> float:
  """Relative error of a float32 sum of n non-negative terms (a squared norm).

  The order XLA sums in is not specified, so the worst case is (n-1)U (1e-1 for the 1M
  word embeddings: no bound at all). Rounding errors of a sum are a martingale with
  increments |delta_k S_k| <= U S: by Azuma-Hoeffding |error| <= lam sqrt(n) U S except
  with probability 2 exp(-lam^2/2) (Higham & Mary, SIAM J. Sci. Comput. 2019/2020, the
  probabilistic rounding-error bound). lam = 7: < 5e-11 per sum, < 2e-7 over this
  module's ~4,000 sums. Plus n U^2 and the U of each square.
  """
  return 7.0 * math.sqrt(n) * U + n * U * U + U


class Float32Bound:
  """First-order running error analysis of bert_jax's optimizer in float32.

  Each float32 operation of the update is one rounding: |fl(x) - x| <= U |x|, applied to
  the exact (reference) values; errors carried in m, v and the params are propagated
  through the recurrences (b1, b2 < 1 contract them; the params add them up step by
  step: the "number of steps" factor). Constants (b1, b2, eps, wd, lr) are rounded to
  float32 too. The update's conditioning enters where it is ill-conditioned:
  - m's EMA cancels when g changes sign: its error is relative to b1|m| + (1-b1)|g|,
    not to |m|, and is divided by sqrt(v) + eps (|m| / sqrt(v) is up to ~(1-b1) /
    sqrt(1-b2) = 3.2 without bias correction);
  - 1 - b^t (LAMB's bias correction) cancels for small t: the float32 b^t carries
    t * rounding(b) + pow's error, relative to 1 - b^t (b2 = 0.999, t = 2: x 500);
  - the schedule's 1 - step/total cancels near the end of the decay;
  - norms (clipping, trust ratio) are sums of many squares (`sum_rel_error`).
  Terms of second order in U are dropped.
  """

  POW_ULPS = 4  # XLA's float32 pow (exp/log based) is within a few ulps.

  def __init__(self, names_sizes: dict):
    self.dm = {k: 0.0 for k in names_sizes}
    self.dv = {k: 0.0 for k in names_sizes}
    self.dp = {k: 0.0 for k in names_sizes}
    self.n_total = sum(names_sizes.values())

  @staticmethod
  def _const(x: float) -> float:
    """Relative error of the float32 constant x."""
    return abs(float(np.float32(x)) - x) / abs(x) if x else 0.0

  def _bias_correction(self, b: float, t: int, c: float) -> float:
    """Relative error of ours 1 / (1 - b^t) (b^t from a rounded b and pow)."""
    if c == 1.0:
      return 0.0
    bt = b ** t
    d_bt = bt * (t * self._const(b) + self.POW_ULPS * U)
    return (d_bt + U * (1 - bt)) / (1 - bt)

  def step(self, info: dict, hp: dict, lamb: bool) -> None:
    """Adds one optimizer step's float32 errors, given the reference's `info`."""
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    t, lr = info["t"], info["lr"]
    s_b1, s_1b1 = self._const(b1) + U, self._const(1 - b1) + U  # constant + product
    s_b2, s_1b2 = self._const(b2) + U, self._const(1 - b2) + U
    # clipping: g * (1 / norm) * clip_norm: the norm's error and the division.
    d_clip = (sum_rel_error(self.n_total) / 2 + U + U) if info["clipped"] else 0.0
    # ours lr (relative error; lr0's own rounding is added below): lr0 * step / warmup,
    # or lr0 * (1 - step / total), where 1 - step/total cancels near the end.
    step, total = t - 1, hp["num_steps"]
    if step < hp["warmup_steps"]:
      d_lr = 2 * U
    else:
      frac = step / total
      d_lr = U * frac / (1 - frac) + 2 * U if frac < 1 else 0.0
    d_c1 = self._bias_correction(b1, t, info["c1"])
    d_c2 = self._bias_correction(b2, t, info["c2"])
    for name, q in info["tensors"].items():
      g, p, m_old, v_old, m, v = (q[k] for k in ("g", "p", "m_old", "v_old", "m", "v"))
      ag = np.abs(g)
      dg = ag * d_clip
      dm = (b1 * self.dm[name] + (1 - b1) * dg
            + s_b1 * b1 * np.abs(m_old) + s_1b1 * (1 - b1) * ag + U * np.abs(m))
      dv = (b2 * self.dv[name] + (1 - b2) * 2 * ag * dg
            + s_b2 * b2 * v_old + (s_1b2 + U) * (1 - b2) * g * g + U * v)
      c1, c2 = info["c1"], info["c2"]
      mh, vh = m * c1, v * c2
      dmh = c1 * dm + np.abs(mh) * (d_c1 + U)
      dvh = c2 * dv + vh * (d_c2 + U)
      sq = np.sqrt(vh)
      # |sqrt(a) - sqrt(b)| = |a - b| / (sqrt(a) + sqrt(b)); sqrt(dvh) where vh = 0.
      lo = sq + np.sqrt(np.maximum(vh - dvh, 0.0))
      dsq = np.where(lo > 0, dvh / np.where(lo > 0, lo, 1.0), np.sqrt(dvh)) + U * sq
      den = sq + eps
      dden = dsq + U * den + self._const(eps) * eps
      u = mh / den
      du = (dmh + np.abs(u) * dden) / np.maximum(den - dden, eps / 2) + U * np.abs(u)
      update, ratio = q["update"], q["ratio"]
      if q["decay"]:  # + wd * p: the product (constant and rounding), the sum.
        du = du + wd * self.dp[name] + (self._const(wd) + U) * wd * np.abs(p) + \
            U * np.abs(update)
      d_ratio = 0.0
      if lamb and q["decay"]:
        # ||w|| and ||update||: each element's error, plus the sum's rounding.
        n = p.size
        w_norm, u_norm = _norm(p), _norm(update)
        dw = _norm(self.dp[name] * np.ones_like(p)) + w_norm * (
            sum_rel_error(n) / 2 + U)
        dun = _norm(du * np.ones_like(update)) + u_norm * (sum_rel_error(n) / 2 + U)
        d_ratio = ratio * (dw / w_norm + dun / (u_norm - dun) + U)
      # ours: update * ratio (LAMB) * -lr: two roundings, and lr's error.
      step_size = ratio * lr * np.abs(update)
      d_step = (ratio * lr * du + lr * np.abs(update) * d_ratio
                + step_size * (d_lr + self._const(hp["learning_rate"]) + 2 * U))
      p_new = p - ratio * lr * update  # and the rounding of the new param:
      self.dp[name] = self.dp[name] + d_step + U * np.abs(p_new)
      self.dm[name], self.dv[name] = dm, dv


# ---------------------------------------------------------------------------------------
# bert_jax's side: the tiny model, real batches, our optimizer.
# ---------------------------------------------------------------------------------------

def tiny_config():
  spec = importlib.util.spec_from_file_location("_cfg_tiny", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()  # 2 layers, H=128, 2 heads, I=512, the bundled 8,000 vocab.
  c.data.max_seq_length = 64
  c.train.batch_size = 16
  c.train.num_steps = 25  # the decay reaches lr/5 at step 20
  c.train.warmup_steps = 5
  c.train.max_grad_norm = 1.0
  return c


@pytest.fixture(scope="module")
def setup():
  c = tiny_config()
  tokenizer = tokenization.load_tokenizer(config_lib.vocab_file(c), c.do_lower_case)
  it = data.make_pretraining_iterator(c, tokenizer, split="train", process_index=0,
                                     process_count=1, seed=0)
  batches = [next(it) for _ in range(STEPS)]
  it.close()
  model = pretrain.make_model(c)
  params = jax.jit(lambda r: nn.unbox(pretrain.make_init_fn(model, c)(r)))(jax.random.PRNGKey(0))

  @jax.jit
  def grad_fn(p, batch):
    def loss(p):
      mlm, nsp = model.apply({"params": p}, batch["input_ids"], batch["token_type_ids"],
                             batch["attention_mask"], batch["masked_lm_positions"],
                             deterministic=True)
      return pretrain.pretraining_loss(mlm, nsp, batch)[0]
    return jax.grad(loss)(p)

  return c, jax.device_get(params), batches, grad_fn


def google(tree, cfg) -> dict:
  """Our params (either layer layout) -> Google-named numpy arrays (a permutation)."""
  return weights.canonical_to_google(weights.params_to_canonical(tree, cfg))


def hyperparams(train_cfg) -> dict:
  return {k: train_cfg[k] for k in ("b1", "b2", "eps", "weight_decay", "learning_rate",
                                    "num_steps", "warmup_steps", "max_grad_norm")}


def run_lockstep(setup, optimizer: str, others: dict | None = None) -> dict:
  """20 steps of ours and the reference on the same gradients -> for each run, the
  largest |ours - reference| / bound per tensor over the steps.

  The gradients come from the model at our optimizer's params (run "ours"); `others`
  ({name: (optax transformation, stacked?)}) are driven by the same gradients: our
  optimizer on stacked layers ("ours, ..." runs are compared at every step), or a
  deliberately wrong definition that the bound must reject, the test's power (compared
  after the last step)."""
  c, params0, batches, grad_fn = setup
  c.train.optimizer = optimizer
  cfg = model_lib.BertConfig.from_config(c.model)
  runs = {"ours": (optim.make_optimizer(c.train), False), **(others or {})}
  lamb = optimizer == "lamb"
  hp = hyperparams(c.train)
  ref_p0 = google(params0, cfg)
  ref = Reference(ref_p0, hp, lamb=lamb)
  bound = Float32Bound({k: v.size for k, v in ref_p0.items()})
  state, steps = {}, {}
  for name, (tx, stacked) in runs.items():
    p0 = model_lib.stack_layers(params0) if stacked else params0
    state[name] = (p0, tx.init(p0))
    steps[name] = jax.jit(lambda p, s, g, tx=tx: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p)))
  worst = {name: {} for name in runs}
  for t in range(STEPS):
    g = jax.device_get(grad_fn(state["ours"][0], batches[t]))
    info = ref.step(google(g, cfg))
    bound.step(info, hp, lamb)
    for name, (_, stacked) in runs.items():
      p, s = steps[name](*state[name], model_lib.stack_layers(g) if stacked else g)
      state[name] = (p, s)
      if not name.startswith("ours") and t < STEPS - 1:
        continue  # a wrong definition only has to be outside the bound at the end
      for key, x in google(jax.device_get(p), cfg).items():
        dev = np.abs(x.astype(np.float64) - ref.p[key])
        ratio = float(np.max(dev / np.maximum(bound.dp[key], np.finfo(np.float64).tiny)))
        worst[name][key] = max(worst[name].get(key, 0.0), ratio)
  return worst


def _report(worst: dict) -> str:
  top = sorted(worst.items(), key=lambda kv: -kv[1])[:3]
  return ", ".join(f"{k}: {v:.3g}" for k, v in top)


def _check(worst: dict, ours: tuple[str, ...]) -> None:
  """Ours within the bound everywhere; each wrong definition outside it somewhere."""
  for name, w in worst.items():
    print(f"{name}: max |ours - reference| / bound = {max(w.values()):.3g} ({_report(w)})")
  for name, w in worst.items():
    if name in ours:
      assert max(w.values()) <= 1.0, (name, _report(w))
    else:
      assert max(w.values()) > 1.0, f"the bound does not tell the reference from {name}"


def _wrong(c, kind: str) -> optax.GradientTransformation:
  """Definitions that differ from the published ones in one point each."""
  t = c.train
  sched = optim.learning_rate_schedule(t)
  clip = optax.clip_by_global_norm(t.max_grad_norm)
  mask = optim.decay_mask
  if kind == "no weight decay":
    return optax.chain(clip, optim.scale_by_bert_adam(t.b1, t.b2, t.eps),
                       optax.scale_by_learning_rate(sched))
  if kind == "LAMB without weight decay":
    return optax.chain(clip, optax.scale_by_adam(t.b1, t.b2, t.eps),
                       optim.scale_by_layerwise_trust_ratio(),
                       optax.scale_by_learning_rate(sched))
  if kind == "weight decay on LayerNorm and biases":
    return optax.chain(clip, optim.scale_by_bert_adam(t.b1, t.b2, t.eps),
                       optax.add_decayed_weights(t.weight_decay),
                       optax.scale_by_learning_rate(sched))
  if kind == "bias correction (optax.adamw)":
    return optax.chain(clip, optax.adamw(sched, b1=t.b1, b2=t.b2, eps=t.eps,
                                         weight_decay=t.weight_decay, mask=mask))
  if kind == "decay from the end of warmup":
    w, n, lr = t.warmup_steps, t.num_steps, t.learning_rate
    return optax.chain(clip, optim.scale_by_bert_adam(t.b1, t.b2, t.eps),
                       optax.add_decayed_weights(t.weight_decay, mask=mask),
                       optax.scale_by_learning_rate(
                           lambda s: jnp.where(s < w, lr * s / w, lr * (n - s) / (n - w))))
  if kind == "optax.lamb (trust ratio on LayerNorm and biases)":
    return optax.chain(clip, optax.lamb(sched, b1=t.b1, b2=t.b2, eps=t.eps,
                                        weight_decay=t.weight_decay, mask=mask))
  if kind == "one trust ratio for the fused Q/K/V":
    def fused(updates, state, params):
      def scale(path, u, w):
        if not optim._decays(optim._path_name(path)):  # LayerNorm and biases: no ratio
          return u
        wn, un = jnp.linalg.norm(w), jnp.linalg.norm(u)
        return u * jnp.where((wn > 0) & (un > 0), wn / un, 1.0)
      return jax.tree_util.tree_map_with_path(scale, updates, params), state
    return optax.chain(clip, optax.scale_by_adam(t.b1, t.b2, t.eps),
                       optax.add_decayed_weights(t.weight_decay, mask=mask),
                       optax.GradientTransformation(optax.init_empty_state, fused),
                       optax.scale_by_learning_rate(sched))
  raise ValueError(kind)


def test_bert_adam_is_googles_adam_weight_decay_optimizer(setup):
  c = setup[0]
  kinds = ("no weight decay", "weight decay on LayerNorm and biases",
           "bias correction (optax.adamw)", "decay from the end of warmup")
  worst = run_lockstep(setup, "bert_adam", {k: (_wrong(c, k), False) for k in kinds})
  _check(worst, ours=("ours",))


def test_lamb_is_the_papers_and_mlperfs_lamb(setup):
  c = setup[0]
  c.train.optimizer = "lamb"
  kinds = ("optax.lamb (trust ratio on LayerNorm and biases)",
           "one trust ratio for the fused Q/K/V", "LAMB without weight decay")
  others = {"ours, stacked layers": (optim.make_optimizer(c.train), True),
            **{k: (_wrong(c, k), False) for k in kinds}}
  worst = run_lockstep(setup, "lamb", others)
  _check(worst, ours=("ours", "ours, stacked layers"))
