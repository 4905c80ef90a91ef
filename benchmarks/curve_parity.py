"""Pre-training curve parity: bert_jax vs Hugging Face PyTorch `BertForPreTraining`.

Both sides train the same model (4 layers, H=256, 4 heads, intermediate 1024, the bundled
8,000-token vocabulary) from the same initial weights (ours, exported with
`weights.save_hf`), on the same batches (drawn once from our pipeline, masks fixed,
fed to both), with the same optimizer: AdamW with bias correction, eps 1e-6, weight
decay 0.01 off LayerNorm parameters and biases (ours: `optim.make_optimizer` "adamw",
optax.adamw with `optim.decay_mask`; theirs: torch.optim.AdamW with two parameter
groups), gradients clipped to global norm 1.0, learning rate warmed up linearly from 0
over the first 10% of the steps, then decayed linearly to 0 at the last step (ours:
`optim.learning_rate_schedule`; theirs: LambdaLR with the same formula). Six runs take
turns step by step:

  jax, hf                  dropout off;
  jax64, hf64              the same two in float64 from the same (float32) weights: the
                           maths, and each float32 curve's rounding error, from which
                           the tolerance is derived (`analyse`);
  jax_dropout, hf_dropout  dropout 0.1 (hidden and attention), each its own random stream.

The JSON keeps every loss and the summary of `analyse`; the PNG plots all five curves.

  python benchmarks/curve_parity.py [--steps=1000] [--batch=16] [--seq=64]
      [--json=benchmarks/results/curve_parity.json] [--png=benchmarks/results/curve_parity.png]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# float32 unit roundoff.
U = 2.0 ** -24


# ---------------------------------------------------------------------------------------
# Setup shared by the benchmark and tests/test_curve_parity.py.
# ---------------------------------------------------------------------------------------

def make_config(*, layers=4, hidden=256, heads=4, intermediate=1024, batch=16, seq=64,
                steps=1000, learning_rate=5e-4, dropout=0.0):
  """configs/tiny.py (bundled corpus and vocabulary) at the given size, AdamW, 1 device."""
  from bert_jax import config as config_lib
  c = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  c.model.num_layers, c.model.hidden_size = layers, hidden
  c.model.num_heads, c.model.intermediate_size = heads, intermediate
  c.model.max_position_embeddings = max(seq, 64)
  c.model.dropout_rate = c.model.attention_dropout_rate = dropout
  c.data.max_seq_length = seq
  c.data.max_predictions_per_seq = max(1, round(0.15 * seq))
  c.train.batch_size = batch
  c.train.num_steps = steps
  c.train.warmup_steps = max(1, steps // 10)
  c.train.learning_rate = learning_rate
  c.train.optimizer = "adamw"
  c.train.max_grad_norm = 1.0
  c.mesh.shape = (1, 1, 1)
  return c


def make_batches(config, n: int, seed: int = 0) -> list[dict]:
  """n global batches of our pipeline (masks drawn once), as numpy."""
  from bert_jax import config as config_lib, data, tokenization
  tok = tokenization.load_tokenizer(config_lib.vocab_file(config), config.do_lower_case)
  it = data.make_pretraining_iterator(config, tok, split="train", process_index=0,
                                     process_count=1, seed=seed)
  out = [dict(next(it)) for _ in range(n)]
  it.close()
  return out


def initial_params(config):
  """Our initialisation of config's model (numpy, per-layer layout)."""
  import jax
  from bert_jax import optim, partitioning, train_lib
  from bert_jax.tasks import pretrain
  mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
  state, _ = train_lib.create_train_state(
      pretrain.make_init_fn(pretrain.make_model(config), config), optim.make_optimizer(config.train),
      mesh, config.seed)
  return jax.device_get(state.params)


def hf_denominators(batch: dict) -> dict:
  """pretrain.denominators without the original's +1e-5 on the number of MLM predictions:
  HF's mean, so that both sides compute the same maths (the +1e-5 makes our MLM loss
  lower by a relative 1e-5 / predictions, about 1e-7)."""
  import jax.numpy as jnp
  return {"mlm": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)),
          "nsp": jnp.float32(batch["input_ids"].shape[0])}


class JaxRun:
  """bert_jax's own training step (train_lib.make_train_step) from given params; with
  float64=True the same model and optimizer in float64 (jax.enable_x64 around each call:
  the float32 runs of the same process keep their float32 programs)."""

  def __init__(self, config, params, dropout: float = 0.0, seed: int = 0,
               float64: bool = False):
    import jax
    self._x64 = (lambda: jax.enable_x64(True)) if float64 else contextlib.nullcontext
    with self._x64():
      from bert_jax import optim, partitioning, train_lib
      from bert_jax.tasks import pretrain
      c = copy.deepcopy(config)
      c.model.dropout_rate = c.model.attention_dropout_rate = dropout
      if float64:
        c.model.dtype = c.model.param_dtype = "float64"
        params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
      mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
      model = pretrain.make_model(c)
      tx = optim.make_optimizer(c.train)
      state, shardings = train_lib.create_train_state(pretrain.make_init_fn(model, c), tx,
                                                      mesh, seed)
      # (The optimizer state does not depend on the values: zero moments, count 0.)
      self.state = state.replace(params=jax.device_put(params, shardings.params))
      self._step = train_lib.make_train_step(pretrain.make_compute_loss(model),
                                             hf_denominators, tx, mesh, shardings)
      self._global_batch = lambda b: train_lib.global_batch(b, mesh)

  def step(self, batch: dict) -> float:
    with self._x64():
      self.state, metrics = self._step(self.state, self._global_batch(batch))
      return float(metrics["loss"])


def hf_labels(batch: dict) -> np.ndarray:
  """Our masked positions/ids -> HF's all-position labels (-100 where not predicted)."""
  b, s = batch["input_ids"].shape
  labels = np.full((b, s), -100, np.int64)
  rows, cols = np.nonzero(batch["masked_lm_weights"] > 0)
  labels[rows, batch["masked_lm_positions"][rows, cols]] = batch["masked_lm_ids"][rows, cols]
  return labels


class TorchRun:
  """transformers' BertForPreTraining + torch.optim.AdamW, the same recipe."""

  def __init__(self, hf_dir: str, config, dropout: float = 0.0, seed: int = 0,
               float64: bool = False):
    import torch
    from transformers import BertForPreTraining
    self.torch = torch
    torch.manual_seed(seed)
    self.model = BertForPreTraining.from_pretrained(
        hf_dir, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout).train()
    # HF's word embeddings have padding_idx=pad_token_id (0): the [PAD] row gets no
    # gradient from its lookups. Google's model (and ours) trains it, and masking can
    # draw [PAD] as the random replacement token (create_pretraining_data samples the
    # whole vocabulary, as the original): off, so that both sides do the same maths.
    self.model.bert.embeddings.word_embeddings.padding_idx = None
    if float64:  # the float32 weights, exactly
      self.model.double()
    t = config.train
    no_decay = lambda n: "LayerNorm" in n or n.endswith("bias")  # noqa: E731
    named = list(self.model.named_parameters())  # tied decoder weight listed once
    self.params = [p for _, p in named]
    self.opt = torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": t.weight_decay},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=t.learning_rate, betas=(t.b1, t.b2), eps=t.eps)
    warmup, total = t.warmup_steps, t.num_steps
    self.sched = torch.optim.lr_scheduler.LambdaLR(
        self.opt, lambda s: s / warmup if s < warmup else max(0.0, 1.0 - s / total))
    self.max_grad_norm = t.max_grad_norm

  def step(self, batch: dict) -> float:
    torch = self.torch
    tensor = lambda x: torch.from_numpy(np.asarray(x, np.int64))  # noqa: E731
    self.opt.zero_grad(set_to_none=True)
    out = self.model(input_ids=tensor(batch["input_ids"]),
                     token_type_ids=tensor(batch["token_type_ids"]),
                     attention_mask=tensor(batch["attention_mask"]),
                     labels=tensor(hf_labels(batch)),
                     next_sentence_label=tensor(batch["next_sentence_labels"]).reshape(-1))
    out.loss.backward()
    # tf.clip_by_global_norm / optax.clip_by_global_norm: g * c / max(norm, c)
    # (torch.nn.utils.clip_grad_norm_ divides by norm + 1e-6: not the same maths).
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in self.params]))
    if norm > self.max_grad_norm:
      for p in self.params:
        p.grad.mul_(self.max_grad_norm / norm)
    self.opt.step()
    self.sched.step()
    return float(out.loss.detach())


def export_hf(config, params, directory: str) -> str:
  from bert_jax import config as config_lib, weights
  return weights.save_hf(directory, config.model, params, config_lib.vocab_file(config))


# ---------------------------------------------------------------------------------------
# The comparison.
# ---------------------------------------------------------------------------------------

def step_noise(loss: np.ndarray, window: int = 50) -> np.ndarray:
  """The curve's own step-to-step noise at each step: the standard deviation of the
  batch-to-batch fluctuation, from the first differences in a centred window (the
  difference of two independent fluctuations has twice their variance; the slow trend
  of the curve contributes little over one step)."""
  d = np.diff(loss, prepend=loss[0])
  out = np.empty_like(loss)
  for t in range(len(loss)):
    lo, hi = max(1, t - window // 2), min(len(loss), t + window // 2 + 1)
    out[t] = np.std(d[lo:hi]) / np.sqrt(2) if hi - lo > 1 else np.inf
  return out


def smooth(x: np.ndarray, window: int = 50) -> np.ndarray:
  """Centred moving average (shorter windows at the ends)."""
  c = np.concatenate([[0.0], np.cumsum(x)])
  out = np.empty_like(x)
  for t in range(len(x)):
    lo, hi = max(0, t - window // 2), min(len(x), t + window // 2 + 1)
    out[t] = (c[hi] - c[lo]) / (hi - lo)
  return out


def float32_error(curves: dict, name: str) -> np.ndarray | None:
  """E(t) = max over s <= t of |L_name(s) - L_name64(s)|: the float32 curve's rounding
  error as amplified by training, measured against the same run in float64 (whose own
  error is 2^29 times smaller). A running max: the difference grows on average but
  crosses 0 from step to step."""
  if name + "64" not in curves:
    return None
  return np.maximum.accumulate(np.abs(np.asarray(curves[name]) -
                                      np.asarray(curves[name + "64"])))


def analyse(curves: dict, window: int = 50) -> dict:
  """The float64 pair against the maths, the dropout-off float32 pair against its
  rounding errors and its step-to-step noise, the dropout-on pair's smoothed curves
  against their noise.

  - float64: the two implementations compute the same maths if their float64 curves
    differ by float64 rounding only, i.e. by float32's scaled by the ratio of the unit
    roundoffs, 2^-29 (the same operations, amplified by the same dynamics):
    max_t |L_jax64 - L_hf64| <= 2^-29 max_t (E_jax(t) + E_hf(t)). (Max over the run, not
    step by step: single values differ by 0-3 float64 ulps, quantisation noise.) A
    difference in the maths (a constant rounded to float32, an epsilon somewhere) does
    not shrink with the precision and stays far above that.
  - float32: each float32 curve is off the exact one by its E (`float32_error`), so
    |L_jax - L_hf| <= E_jax(t) + E_hf(t) + |L_jax64 - L_hf64| step by step: the
    disagreement is rounding and nothing else (given the float64 result, this is the
    triangle inequality: the float32 tolerance is derived, not a separate test); and it
    stays below the curve's own step-to-step noise (`step_noise`).
  """
  out = {}
  jax_l = np.asarray(curves["jax"])
  n = len(jax_l)
  d_hf = np.abs(jax_l - np.asarray(curves["hf"]))
  rel = d_hf / np.abs(jax_l)
  noise = step_noise(jax_l, window)
  off = {
      "steps": n,
      "max_abs_diff": float(d_hf.max()), "median_abs_diff": float(np.median(d_hf)),
      "max_rel_diff": float(rel.max()), "median_rel_diff": float(np.median(rel)),
      "step0_abs_diff": float(d_hf[0]),
      "final_loss_jax": float(jax_l[-1]), "final_loss_hf": float(curves["hf"][-1]),
      "median_step_noise": float(np.median(noise)),
      "max_diff_over_noise": float(np.max(d_hf / noise)),
      "median_diff_over_noise": float(np.median(d_hf / noise)),
      "within_noise": bool(np.all(d_hf <= noise)),
  }
  e_jax, e_hf = float32_error(curves, "jax"), float32_error(curves, "hf")
  if e_jax is not None and e_hf is not None:
    a, b = np.asarray(curves["jax64"]), np.asarray(curves["hf64"])
    d64 = np.abs(a - b)
    tol64 = 2.0 ** -29 * float(np.max(e_jax + e_hf))
    out["float64"] = {
        "max_abs_diff": float(d64.max()), "median_abs_diff": float(np.median(d64)),
        "tolerance": tol64, "max_diff_over_tolerance": float(d64.max() / tol64),
        "within_tolerance": bool(d64.max() <= tol64),
        "max_diff_over_float32_max_diff": float(d64.max() / d_hf.max()),
        "final_loss_jax": float(a[-1]), "final_loss_hf": float(b[-1]),
    }
    tol = e_jax + e_hf + d64
    off.update(
        float32_error_jax_max=float(e_jax[-1]), float32_error_hf_max=float(e_hf[-1]),
        max_diff_over_tolerance=float(np.max(d_hf / tol)),
        median_diff_over_tolerance=float(np.median(d_hf / tol)),
        within_tolerance=bool(np.all(d_hf <= tol)))
  out["dropout_off"] = off
  if "jax_dropout" in curves and "hf_dropout" in curves:
    a, b = np.asarray(curves["jax_dropout"]), np.asarray(curves["hf_dropout"])
    sa, sb = smooth(a, window), smooth(b, window)
    noise_on = np.sqrt((step_noise(a, window) ** 2 + step_noise(b, window) ** 2) / 2)
    d = np.abs(sa - sb)
    out["dropout_on"] = {
        "smoothing_window": window,
        "max_abs_diff_smoothed": float(d.max()),
        "median_abs_diff_smoothed": float(np.median(d)),
        "median_step_noise": float(np.median(noise_on)),
        "max_diff_over_noise": float(np.max(d / noise_on)),
        "within_noise": bool(np.all(d <= noise_on)),
        "final_smoothed_jax": float(sa[-1]), "final_smoothed_hf": float(sb[-1]),
    }
  return out


def plot(curves: dict, path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 8), sharex=True,
                                gridspec_kw={"height_ratios": [3, 2]})
  steps = np.arange(len(curves["jax"]))
  styles = {"jax": ("bert_jax, dropout off", "C0", 1.2),
            "hf": ("HF PyTorch, dropout off", "C1", 0.8),
            "jax_dropout": ("bert_jax, dropout 0.1", "C2", 1.0),
            "hf_dropout": ("HF PyTorch, dropout 0.1", "C3", 1.0)}
  floor = 1e-16  # log axis: exact agreement is drawn at the floor
  for key, (label, color, lw) in styles.items():
    if key in curves:
      y = np.asarray(curves[key])
      if key.endswith("dropout"):
        ax.plot(steps, smooth(y), color=color, lw=1.5, label=label + " (50-step mean)",
                ls="--" if key.startswith("hf") else "-")
      else:
        ax.plot(steps, y, color=color, lw=lw, label=label,
                ls="--" if key == "hf" else "-")
  ax.set_ylabel("pre-training loss (MLM + NSP)")
  ax.set_title(title)
  ax.legend()
  jax_l = np.asarray(curves["jax"])
  ax2.semilogy(steps, np.abs(jax_l - np.asarray(curves["hf"])) + floor, color="C1", lw=0.8,
               label="|bert_jax - HF|, dropout off")
  e_jax, e_hf = float32_error(curves, "jax"), float32_error(curves, "hf")
  if e_jax is not None and e_hf is not None:
    ax2.semilogy(steps, e_jax + e_hf, color="C7", lw=1.0,
                 label="E_jax + E_hf (each float32 curve vs its float64 run)")
    ax2.semilogy(steps, np.abs(np.asarray(curves["jax64"]) - np.asarray(curves["hf64"]))
                 + floor, color="C4", lw=0.8, label="|bert_jax - HF|, both float64")
  ax2.semilogy(steps, step_noise(jax_l), color="k", lw=1.0, ls=":",
               label="the curve's step-to-step noise")
  ax2.set_xlabel("step")
  ax2.set_ylabel("absolute loss difference")
  ax2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _title(batch: int, seq: int) -> str:
  return f"bert_jax vs HF PyTorch BertForPreTraining: L4 H256, batch {batch} x seq {seq}, AdamW"


def markdown(result: dict) -> str:
  """The docs' table of a result JSON (benchmarks/README.md is generated from it)."""
  s = result["summary"]
  off, f64, on = s["dropout_off"], s.get("float64"), s.get("dropout_on")
  rows = [
      ("steps (batch x seq)", f"{off['steps']} ({result['batch']} x {result['seq']})"),
      ("final loss, dropout off: bert_jax / HF",
       f"{off['final_loss_jax']:.4f} / {off['final_loss_hf']:.4f}"),
      ("loss difference, dropout off: max / median",
       f"{off['max_abs_diff']:.2e} / {off['median_abs_diff']:.2e} (relative "
       f"{off['max_rel_diff']:.1e} / {off['median_rel_diff']:.1e})"),
      ("... in units of the curve's step-to-step noise: max / median",
       f"{off['max_diff_over_noise']:.1e} / {off['median_diff_over_noise']:.1e} (noise "
       f"{off['median_step_noise']:.3f}, median)"),
  ]
  if f64:
    rows += [
        ("float32 error E (float32 vs float64 curve, max): bert_jax / HF",
         f"{off['float32_error_jax_max']:.2e} / {off['float32_error_hf_max']:.2e}"),
        ("loss difference, both in float64: max / median",
         f"{f64['max_abs_diff']:.1e} / {f64['median_abs_diff']:.1e} (tolerance "
         f"2^-29 max(E_jax + E_hf) = {f64['tolerance']:.1e})"),
    ]
  if on:
    rows += [
        (f"dropout {result['dropout']}: difference of the {on['smoothing_window']}-step "
         "means, max / median",
         f"{on['max_abs_diff_smoothed']:.4f} / {on['median_abs_diff_smoothed']:.4f} "
         f"({on['max_diff_over_noise']:.2f} x the step-to-step noise at most)"),
        (f"dropout {result['dropout']}: final {on['smoothing_window']}-step mean, "
         "bert_jax / HF", f"{on['final_smoothed_jax']:.4f} / {on['final_smoothed_hf']:.4f}"),
    ]
  lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--learning_rate", type=float, default=5e-4)
  p.add_argument("--dropout", type=float, default=0.1)
  p.add_argument("--runs", default="jax,hf,jax64,hf64,jax_dropout,hf_dropout")
  p.add_argument("--torch_threads", type=int, default=1,
                 help="PyTorch intra-op threads (with more threads than free cores, "
                      "OpenMP threads wait on each other and the step gets many times "
                      "slower)")
  p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results",
                                                "curve_parity.json"))
  p.add_argument("--png", default=os.path.join(REPO, "benchmarks", "results",
                                               "curve_parity.png"))
  p.add_argument("--markdown", default="",
                 help="print the docs' table of this result JSON (and redraw --png from "
                      "it if given) and exit")
  args = p.parse_args(argv)
  if args.markdown:
    with open(args.markdown) as f:
      result = json.load(f)
    print(markdown(result))
    if args.png and "--png" in " ".join(argv or sys.argv[1:]):
      plot(result["curves"], args.png, _title(result["batch"], result["seq"]))
    return 0
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import jax
  import torch
  torch.set_num_threads(args.torch_threads)

  config = make_config(batch=args.batch, seq=args.seq, steps=args.steps,
                       learning_rate=args.learning_rate)
  t0 = time.time()
  batches = make_batches(config, args.steps)
  params = initial_params(config)
  names = args.runs.split(",")
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = export_hf(config, params, tmp)
    factories = {
        "jax": lambda: JaxRun(config, params),
        "hf": lambda: TorchRun(hf_dir, config),
        "jax64": lambda: JaxRun(config, params, float64=True),
        "hf64": lambda: TorchRun(hf_dir, config, float64=True),
        "jax_dropout": lambda: JaxRun(config, params, dropout=args.dropout, seed=1),
        "hf_dropout": lambda: TorchRun(hf_dir, config, dropout=args.dropout, seed=1),
    }
    runs = {n: factories[n]() for n in names}
  curves = {n: [] for n in names}
  seconds = {n: 0.0 for n in names}
  commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
  result = {
      "command": "python benchmarks/curve_parity.py " + " ".join(argv or sys.argv[1:]),
      "commit": commit,
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
                 f"({jax.devices()[0].platform}), torch {torch.__version__} "
                 f"({torch.get_num_threads()} threads)",
      "model": {k: config.model[k] for k in ("num_layers", "hidden_size", "num_heads",
                                             "intermediate_size", "vocab_size")},
      "batch": args.batch, "seq": args.seq,
      "max_predictions_per_seq": config.data.max_predictions_per_seq,
      "optimizer": {k: config.train[k] for k in ("optimizer", "learning_rate",
                                                 "warmup_steps", "num_steps", "b1", "b2",
                                                 "eps", "weight_decay", "max_grad_norm")},
      "dropout": args.dropout,
  }
  for t, batch in enumerate(batches):
    for n, run in runs.items():
      s = time.perf_counter()
      curves[n].append(run.step(batch))
      seconds[n] += time.perf_counter() - s
    if (t + 1) % 50 == 0 or t + 1 == len(batches):
      summary = analyse(curves) if {"jax", "hf"} <= set(curves) else {}
      result.update(curves=curves, summary=summary, steps_done=t + 1,
                    seconds_per_step={n: s / (t + 1) for n, s in seconds.items()},
                    wall_s=time.time() - t0)
      os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
      with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
      line = " ".join(f"{n}={curves[n][-1]:.4f}" for n in names)
      print(f"step {t + 1}/{len(batches)} {line} ({time.time() - t0:.0f} s)", flush=True)
  if args.png:
    plot(curves, args.png, _title(args.batch, args.seq))
  print(json.dumps(result["summary"], indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
