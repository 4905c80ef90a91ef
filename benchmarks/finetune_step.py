"""Fine-tuning train-step speed and memory: bert_jax vs Hugging Face Flax and PyTorch.

Times the whole fine-tuning step -- forward, backward, global-norm clipping (1.0), AdamW
with weight decay 0.01 off biases and LayerNorm, linear warmup/decay schedule, dropout
0.1 on -- for the three fine-tuning heads at fixed shapes (default BERT-Base, vocab 30522):

  classification   BertForSequenceClassification, 2 labels, batch 8 x seq 128 (GLUE)
  qa               BertForQuestionAnswering, start/end logits, batch 4 x seq 384 (SQuAD)
  multiple_choice  BertForMultipleChoice, 4 choices x seq 128, batch 4 questions (SWAG)

bert_jax runs its own fine-tuning step as `finetune.run` builds it (the task's head and
per-example losses through finetune.make_compute_loss, finetune.init_state,
optim.make_optimizer, train_lib.make_train_step); HF Flax runs
FlaxBertFor{SequenceClassification,QuestionAnswering,MultipleChoice} with optax
(clip_by_global_norm + adamw, the same decay mask and schedule) in one jitted, donated
step; HF PyTorch runs BertFor... with torch.optim.AdamW (two parameter groups, same
decay mask), clip_grad_norm_ and a linear schedule, in a child process (peers.run_isolated:
its idle threads slow XLA's). All three get the same random batch of each shape. The JAX
implementations take turns step by step (peers.interleaved), PyTorch's child runs right
after them. Reported: median step ms of --steps steps after one warm-up step, speedup
(peer ms / ours ms), and peak memory: the compiled program's (arguments + outputs -
aliased + temporaries, XLA's memory_analysis) for the JAX ones, the child's peak RSS
minus its RSS before building the model for PyTorch (a different measure: allocator and
framework overhead included). The JSON also records the command, commit and machine,
with the load average at the start and the end (timings on a busy machine are slower
and noisier; read them with the load).

  bash benchmarks/setup_peers.sh        # once: transformers<5 (Flax models) into .peer/
  python benchmarks/finetune_step.py [--tasks=classification,qa,multiple_choice] \
      [--steps=10] [--small] [--json=out.json]

--small runs a tiny L2 H128 model at the same shapes (a smoke run, not a benchmark).
On a GPU: --dtype=bfloat16 (mixed precision for all three: our model.dtype, HF Flax's
dtype=, PyTorch's autocast; parameters and AdamW stay float32) and --paper_batches (the
paper's fine-tuning batches: 32 for GLUE and SQuAD, 16 for SWAG); PyTorch's memory is
then its allocator's peak (benchmarks/gpu.sh runs both).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (must put .peer on sys.path before transformers is imported)

HAVE_FLAX_PEER = peers.use_peer_transformers()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import config as config_lib  # noqa: E402
from bert_jax import finetune, hugepages, optim, partitioning, train_lib  # noqa: E402
from bert_jax.model import BertConfig  # noqa: E402
from bert_jax.tasks import glue, squad, swag  # noqa: E402

# name: (batch, choices (0 = a plain [B, S] batch), seq, description)
TASKS = {
    "classification": (8, 0, 128, "classification B8 S128, 2 labels"),
    "qa": (4, 0, 384, "QA B4 S384"),
    "multiple_choice": (4, 4, 128, "multiple choice B4 x 4 choices x S128"),
}
PAPER_BATCHES = {"classification": 32, "qa": 32, "multiple_choice": 16}
TORCH_CLASSES = {"classification": "BertForSequenceClassification",
                 "qa": "BertForQuestionAnswering", "multiple_choice": "BertForMultipleChoice"}
LEARNING_RATE = 2e-5
NUM_STEPS, WARMUP_STEPS = 1000, 100  # the schedule's shape; the step's cost ignores it
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0


def task_shape(task: str, paper_batches: bool) -> tuple[int, int, int, str]:
  """(batch, choices, seq, description) of `task`, at the paper's batch if asked."""
  b, choices, s, desc = TASKS[task]
  if not paper_batches:
    return b, choices, s, desc
  pb = PAPER_BATCHES[task]
  return pb, choices, s, desc.replace(f"B{b} ", f"B{pb} ")


def make_config(small: bool, seq: int, dtype: str = "float32"):
  """The fine-tuning config finetune.run would train with (add_finetune_config's recipe)."""
  c = config_lib.default_config()
  config_lib.add_finetune_config(c)
  config_lib.size_overrides(c, "tiny" if small else "base")
  c.model.vocab_size = 30522
  c.data.max_seq_length = seq
  c.train.learning_rate = LEARNING_RATE
  c.train.num_steps = NUM_STEPS
  c.train.warmup_steps = WARMUP_STEPS
  c.mesh.shape = (1, 1, 1)
  c.model.dtype = dtype
  assert c.train.optimizer == "adamw" and c.train.max_grad_norm == MAX_GRAD_NORM
  assert c.train.weight_decay == WEIGHT_DECAY and c.model.dropout_rate == 0.1
  assert c.model.attention_dropout_rate == 0.1
  return c


def synthetic_batch(task: str, paper_batches: bool = False, vocab: int = 30522, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """One full-length random batch of `task` in the fine-tuning loop's feature format."""
  b, choices, s, _ = task_shape(task, paper_batches)
  rs = np.random.RandomState(seed)
  shape = (b, choices, s) if choices else (b, s)
  x = {"input_ids": rs.randint(5, vocab, shape).astype(np.int32),
       "token_type_ids": np.broadcast_to(np.arange(s) >= s // 2, shape).astype(np.int32),
       "attention_mask": np.ones(shape, np.int32),
       "example_weight": np.ones(b, np.float32)}
  if task == "qa":
    start = rs.randint(s // 2, s - 10, b).astype(np.int32)
    x.update(start_positions=start, end_positions=start + rs.randint(0, 8, b).astype(np.int32))
  else:
    x["labels"] = rs.randint(0, choices or 2, b).astype(np.int32)
  return x


def make_task(task: str):
  """The library's task object; the benchmark uses only its make_model / example_losses."""
  if task == "classification":
    return glue.GlueTask("mrpc", data_dir="")
  if task == "qa":
    return squad.SquadTask(config_lib.squad_config())
  # The files are never read: __post_init__ only insists that they are named.
  return swag.MultipleChoiceTask(train_file="train.csv", dev_file="val.csv")


def peak_bytes(compiled) -> int | None:
  """Peak memory of a compiled program: live arguments + outputs + temporaries (as in
  train_step.py)."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def _block(x):
  jax.block_until_ready(x)


def ours(task: str, c, batch: dict):
  """bert_jax's fine-tuning step as finetune.run builds it: (runner, peak bytes)."""
  t = make_task(task)
  model = t.make_model(BertConfig.from_config(c.model))
  tx = optim.make_optimizer(c.train)
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  state, shardings = finetune.init_state(model, batch, tx, mesh, 0)
  compute_loss, denominators_fn = finetune.make_compute_loss(t, model)
  step = train_lib.make_train_step(compute_loss, denominators_fn, tx, mesh, shardings)
  gb = train_lib.global_batch(batch, mesh)
  with partitioning.activate(mesh):
    compiled = step.jitted.lower(state, gb).compile()

  def run(s, b):
    s, m = compiled(s, b)
    return s, m["loss"]
  return peers.stepper(run, state, gb, _block), peak_bytes(compiled)


def _lr_multiplier(step: int) -> float:
  """The linear warmup / linear decay multiplier (of the peak learning rate) at `step`."""
  if step < WARMUP_STEPS:
    return step / WARMUP_STEPS
  return max(0.0, (NUM_STEPS - step) / (NUM_STEPS - WARMUP_STEPS))


def _decays(path: tuple[str, ...]) -> bool:
  """HF's examples' weight-decay mask: not on biases, not on LayerNorm parameters."""
  return path[-1] != "bias" and not any("layernorm" in p.lower() for p in path)


def flax_peer(task: str, c, batch: dict):
  """HF Flax model + optax clip/adamw (HF's Flax examples' recipe), jitted and donated."""
  import optax
  from flax import traverse_util
  import transformers

  cfg = peers.hf_config(c.model)
  cls = {"classification": transformers.FlaxBertForSequenceClassification,
         "qa": transformers.FlaxBertForQuestionAnswering,
         "multiple_choice": transformers.FlaxBertForMultipleChoice}[task]
  if task == "classification":
    cfg.num_labels = 2
  model = cls(cfg, seed=0, dtype=jnp.dtype(c.model.dtype))
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, LEARNING_RATE, WARMUP_STEPS),
       optax.linear_schedule(LEARNING_RATE, 0.0, NUM_STEPS - WARMUP_STEPS)], [WARMUP_STEPS])

  def mask(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: _decays(k) for k in flat})

  tx = optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM),
                   optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6,
                               weight_decay=WEIGHT_DECAY, mask=mask))
  jb = jax.device_put({k: v for k, v in batch.items() if k != "example_weight"})
  ce = optax.softmax_cross_entropy_with_integer_labels

  def loss_fn(params, x, rng):
    out = model(x["input_ids"], x["attention_mask"], x["token_type_ids"], params=params,
                dropout_rng=rng, train=True)
    def f32(t):  # a bfloat16 run's logits, for a float32 loss
      return t.astype(jnp.float32)

    if task == "qa":
      return 0.5 * (ce(f32(out.start_logits), x["start_positions"]).mean()
                    + ce(f32(out.end_logits), x["end_positions"]).mean())
    return ce(f32(out.logits), x["labels"]).mean()

  compiled, state, jb, _ = peers.flax_adamw_step(loss_fn, model.params, jb, tx)
  return peers.stepper(compiled, state, jb, _block), peak_bytes(compiled)


def torch_peer(task: str, c, batch: dict):
  """HF PyTorch model + torch AdamW (decay groups), clip_grad_norm_, linear schedule."""
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  cfg = peers.hf_config(c.model)
  cls = getattr(transformers, TORCH_CLASSES[task])
  if task == "classification":
    cfg.num_labels = 2
  model = cls(cfg).train().to(peers.torch_device())
  named = list(model.named_parameters())
  groups = [{"params": [p for n, p in named if _decays(tuple(n.split(".")))],
             "weight_decay": WEIGHT_DECAY},
            {"params": [p for n, p in named if not _decays(tuple(n.split(".")))],
             "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-6)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_multiplier)
  tb = {k: torch.from_numpy(np.asarray(v, np.int64)).to(peers.torch_device())
        for k, v in batch.items() if k != "example_weight"}

  def step(state, b):
    opt.zero_grad(set_to_none=True)
    with peers.torch_autocast(c.model.dtype):
      loss = model(**b).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    opt.step()
    sched.step()
    return state, loss.detach()
  return peers.stepper(step, None, tb, peers.torch_sync), None


def _rss_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  return 0


def worker(task: str, steps: int, small: bool, dtype: str, paper_batches: bool) -> None:
  """--worker=TASK: the PyTorch peer alone in this process (see peers.run_isolated);
  prints its JSON (median step seconds, every step's seconds, peak RSS delta)."""
  import torch  # noqa: F401  (imported before the baseline RSS is read)
  import transformers
  getattr(transformers, TORCH_CLASSES[task])  # transformers imports its models lazily
  before = _rss_bytes()
  run, _ = torch_peer(task, make_config(small, TASKS[task][2], dtype),
                      synthetic_batch(task, paper_batches))
  times = peers.interleaved({"hf-torch": run}, steps)["hf-torch"]
  peak, kind = peers.torch_peak_bytes(), "allocator peak (GPU)"
  if peak is None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # KiB on Linux
    kind = "max RSS delta"
  print(json.dumps({"step_s": statistics.median(times), "times_s": times,
                    "peak_bytes": peak, "peak_kind": kind}))


def machine() -> dict:
  return {"cpu": peers.cpu_name(), "cores": os.cpu_count(), "os": platform.platform(),
          "device": jax.devices()[0].device_kind, "python": platform.python_version(),
          "hugepages": hugepages.enabled()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", default=",".join(TASKS))
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--peers", default="flax,torch")
  p.add_argument("--small", action="store_true", help="tiny L2 H128 model: a smoke run")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="computation dtype of all three (parameters stay float32)")
  p.add_argument("--paper_batches", action="store_true",
                 help="the paper's batches (32 GLUE/SQuAD, 16 SWAG) instead of the CPU's")
  p.add_argument("--json", default="")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.worker:
    return worker(a.worker, a.steps, a.small, a.dtype, a.paper_batches)

  load_start = os.getloadavg()
  t_start = time.time()
  m = machine()
  print(f"device: {m['device']} ({m['cpu']}, {m['cores']} cores); {a.dtype}; host buffers: "
        + ("transparent huge pages (bert_jax/hugepages.py)" if m["hugepages"]
           else "4 KiB pages")
        + f"; load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
  peers_on = set(x for x in a.peers.split(",") if x)
  if "flax" in peers_on and not HAVE_FLAX_PEER:
    print("hf-flax: not run (no .peer/; run `bash benchmarks/setup_peers.sh`)")
    peers_on.discard("flax")
  print(f"{'task':16s} {'impl':9s} {'step ms':>9s} {'seq/s':>8s} {'peak MiB':>9s}")
  rows = []

  def write_json(done: bool):
    """The JSON so far (after every task: a run cut short keeps the tasks it finished)."""
    if not a.json:
      return
    load_now = os.getloadavg()
    out = {"command": "python benchmarks/finetune_step.py " + " ".join(sys.argv[1:]),
           "commit": peers.commit(), "small": a.small, "steps": a.steps, "complete": done,
           "dtype": a.dtype, "paper_batches": a.paper_batches,
           "machine": dict(m, load_average_at_start=list(load_start),
                           load_average_at_end=list(load_now)),
           "seconds": time.time() - t_start, "rows": rows}
    with open(a.json, "w") as f:
      json.dump(out, f, indent=1)

  for task in a.tasks.split(","):
    b, choices, s, desc = task_shape(task, a.paper_batches)
    c = make_config(a.small, s, a.dtype)
    batch = synthetic_batch(task, a.paper_batches)
    builders = {"bert_jax": lambda: ours(task, c, batch)}
    if "flax" in peers_on:
      builders["hf-flax"] = lambda: flax_peer(task, c, batch)
    built = {name: build() for name, build in builders.items()}
    times = peers.interleaved({name: r for name, (r, _) in built.items()}, a.steps)
    results = {name: {"step_s": statistics.median(times[name]), "times_s": times[name],
                      "peak_bytes": built[name][1], "peak_kind": "compiled"}
               for name in built}
    del built  # frees both models before the next task (and the PyTorch child)
    if "torch" in peers_on:
      results["hf-torch"] = peers.run_isolated(
          __file__, [f"--worker={task}", f"--steps={a.steps}", f"--dtype={a.dtype}"]
          + (["--small"] if a.small else []) + (["--paper_batches"] if a.paper_batches else []))
    sequences = b * max(choices, 1)
    for who, r in results.items():
      row = dict(r, task=task, shape=desc, impl=who, batch=b, choices=choices, seq=s,
                 size="tiny L2 H128" if a.small else "base L12 H768",
                 seq_per_s=sequences / r["step_s"])
      if who != "bert_jax":
        row["speedup"] = r["step_s"] / results["bert_jax"]["step_s"]
      rows.append(row)
      mib = f"{r['peak_bytes'] / 2**20:9.1f}" if r.get("peak_bytes") else "      n/a"
      print(f"{task:16s} {who:9s} {r['step_s'] * 1e3:9.1f} {sequences / r['step_s']:8.2f} "
            f"{mib}" + (f"  ({r['peak_kind']})" if r.get("peak_bytes") else ""), flush=True)
    for row in rows[-len(results):]:
      if "speedup" in row:
        print(f"{'':16s} {row['impl']} ms / bert_jax ms: {row['speedup']:.2f}x", flush=True)
    write_json(done=False)
  load_end = os.getloadavg()
  print(f"load average at the end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; "
        f"{time.time() - t_start:.0f} s")
  write_json(done=True)
  if a.json:
    print(f"wrote {a.json}")


if __name__ == "__main__":  # every implementation in this run gets huge pages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  main()
