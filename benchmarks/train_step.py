"""Pre-training train-step speed and memory: bert_jax vs Hugging Face Flax and PyTorch.

Times the full step (forward, backward, AdamW update; MLM + NSP) after compilation,
median of --steps steps at fixed shapes, the implementations taking turns step by step
(so that a slow spell of the shared machine hits them alike), and prints step ms,
sequences/s, model FLOPs per step (bert_jax.flops formula), achieved FLOP/s and MFU
against the peak float32 matmul FLOP/s of this device measured in the same run, and the
compiled program's peak memory. The peers run the same shapes in the same run (see
peers.py; PyTorch in a child process, see peers.run_isolated). --levers times each lever
against the baseline the same way. The script re-executes itself with huge pages for the
host buffers (bert_jax/hugepages.py), so every implementation in the run has them; the
lever "no-hugepages" is ours in a child process without them.

  bash benchmarks/setup_peers.sh        # once: transformers<5 (Flax models) into .peer/
  python benchmarks/train_step.py [--shapes=tiny,base128] [--levers] [--json=out.json]

On a GPU, --dtype=bfloat16 runs all three in mixed precision (float32 parameters and
optimizer, bfloat16 matmuls: our model.dtype, HF Flax's dtype=, PyTorch's autocast) at
the GPU shapes (base128x64, base512x16, large128x32); MFU is then against the measured
bfloat16 matmul peak and PyTorch's memory is its allocator's peak (benchmarks/gpu.sh).
"""
from __future__ import annotations

import argparse
import json
import os
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

from bert_jax import flops as flops_lib  # noqa: E402
from bert_jax import hugepages, optim, partitioning, train_lib  # noqa: E402
from bert_jax.tasks import pretrain  # noqa: E402

# name: (size, batch, seq, predictions)
SHAPES = {
    "tiny": ("tiny", 32, 128, 20),
    "mini": ("mini", 32, 128, 20),
    "small": ("small", 32, 128, 20),
    "base128": ("base", 8, 128, 20),
    "base512": ("base", 2, 512, 80),
    # Accelerator shapes (the paper's phase-1/phase-2 sequence lengths, one chip's batch).
    "base128x64": ("base", 64, 128, 20),
    "base512x16": ("base", 16, 512, 80),
    "large128x32": ("large", 32, 128, 20),
}


def measure_peak_matmul(n: int = 2048, reps: int = 30, dtype: str = "float32") -> float:
  """Peak `dtype` matmul FLOP/s of device 0: the fastest of `reps` n x n x n products.

  The best, not the median: a peak is what the machine can do, and MFU against it is
  the conservative figure (the median swung 350-445 GFLOP/s between runs here).
  """
  a = jnp.asarray(np.random.RandomState(0).randn(n, n), jnp.dtype(dtype))
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / min(times)


def make_config(size: str, batch: int, seq: int, preds: int, **model_overrides):
  c = config_lib.default_config()
  config_lib.size_overrides(c, size)
  c.model.vocab_size = 30522
  c.data.max_seq_length = seq
  c.data.max_predictions_per_seq = preds
  c.train.batch_size = batch
  c.train.num_steps = 1000
  c.train.warmup_steps = 10
  c.train.optimizer = "adamw"
  c.mesh.shape = (1, 1, 1)
  for k, v in model_overrides.items():
    c.model[k] = v
  return c


def synthetic_batch(batch: int, seq: int, preds: int, vocab: int = 30522, seed: int = 0):
  """A full-length batch in the pipeline's format (positions distinct, 1..seq-2)."""
  rs = np.random.RandomState(seed)
  pos = np.stack([np.sort(rs.choice(np.arange(1, seq - 1), preds, replace=False))
                  for _ in range(batch)]).astype(np.int32)
  return {
      "input_ids": rs.randint(5, vocab, (batch, seq)).astype(np.int32),
      "attention_mask": np.ones((batch, seq), np.int32),
      "token_type_ids": (np.arange(seq)[None] >= seq // 2).astype(np.int32).repeat(batch, 0),
      "masked_lm_positions": pos,
      "masked_lm_ids": rs.randint(5, vocab, (batch, preds)).astype(np.int32),
      "masked_lm_weights": np.ones((batch, preds), np.float32),
      "next_sentence_labels": rs.randint(0, 2, (batch,)).astype(np.int32),
  }


def peak_bytes(compiled) -> int | None:
  """Peak device memory of a compiled program: live arguments + outputs + temporaries."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def ours(c, batch, donate: bool = True, host_sync: bool = False):
  """bert_jax's step exactly as the loop builds it: (one-step runner, peak bytes)."""
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  model = pretrain.make_model(c)
  tx = optim.make_optimizer(c.train)
  state, sh = train_lib.create_train_state(pretrain.make_init_fn(model, c), tx, mesh, 0)
  step = train_lib.make_train_step(pretrain.make_compute_loss(model), pretrain.denominators, tx,
                                   mesh, sh, donate=donate)
  gb = train_lib.global_batch(batch, mesh)
  with partitioning.activate(mesh):
    compiled = step.jitted.lower(state, gb).compile()

  def run(s, b):
    s, m = compiled(s, b)
    if host_sync:
      float(m["loss"])
    return s, m["loss"]
  return peers.stepper(run, state, gb, lambda x: x.block_until_ready()), peak_bytes(compiled)


def flax_peer(c, batch):
  compiled, state, jb, _ = peers.flax_step(c.model, batch, dtype=c.model.dtype)
  return (peers.stepper(compiled, state, jb, lambda x: x.block_until_ready()),
          peak_bytes(compiled))


def torch_peer(c, batch):
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  step, state, tb = peers.torch_step(c.model, batch, dtype=c.model.dtype)
  run = peers.stepper(step, state, tb, peers.torch_sync)
  run()  # the peak counts the optimizer's state, made at the first step
  return run, peers.torch_peak_bytes()


def worker(who: str, name: str, steps: int, dtype: str) -> None:
  """--worker=WHO: one implementation alone in this process (see peers.run_isolated):
  the PyTorch peer, or ours for the huge-pages lever; prints its JSON."""
  size, b, s, pr = SHAPES[name]
  build = {"hf-torch": torch_peer, "bert_jax": ours}[who]
  r = measure({who: lambda: build(make_config(size, b, s, pr, dtype=dtype),
                                  synthetic_batch(b, s, pr))}, steps)
  print(json.dumps(r[who]))


def measure(builders: dict, steps: int) -> dict[str, dict]:
  """Builds every runner, then times them interleaved (peers.interleaved)."""
  built = {name: build() for name, build in builders.items()}
  times = peers.interleaved({name: r for name, (r, _) in built.items()}, steps)
  return {name: {"step_s": statistics.median(times[name]), "peak_bytes": built[name][1]}
          for name in built}


def _row(name, who, r, flops, peak, batch):
  step_s = r["step_s"]
  achieved = flops / step_s
  mem = f"{r['peak_bytes'] / 2**20:8.1f}" if r.get("peak_bytes") else "     n/a"
  print(f"{name:8s} {who:14s} {step_s * 1e3:9.1f} {batch / step_s:9.1f} "
        f"{achieved / 1e9:9.1f} {100 * achieved / peak:6.1f}% {mem}", flush=True)
  return dict(r, shape=name, impl=who, seq_per_s=batch / step_s, flops_per_step=flops,
              achieved_flops=achieved, mfu=achieved / peak)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", default=",".join(SHAPES))
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--peers", default="flax,torch")
  p.add_argument("--levers", action="store_true", help="also measure each lever on/off")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="computation dtype of all three (parameters stay float32)")
  p.add_argument("--json", default="")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.worker:
    return worker(a.worker, a.shapes, a.steps, a.dtype)

  on_accelerator = jax.devices()[0].platform != "cpu"
  peak = measure_peak_matmul(n=8192 if on_accelerator else 2048, dtype=a.dtype)
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({jax.device_count()} devices, {os.cpu_count()} cores); "
        f"measured peak {a.dtype} matmul: {peak / 1e9:.1f} GFLOP/s; host buffers: "
        + ("transparent huge pages (bert_jax/hugepages.py)" if hugepages.enabled()
           else "4 KiB pages"))
  print("FLOPs/step = 3*B*[S*L*(8H^2 + 4*H*I + 4*S*H) + P*(2H^2 + 2*H*V) + 2H^2 + 4H] "
        "(MLM head at the P masked positions only; see bert_jax/flops.py)")
  print(f"{'shape':8s} {'impl':14s} {'step ms':>9s} {'seq/s':>9s} {'GFLOP/s':>9s} "
        f"{'MFU':>7s} {'peak MiB':>8s}")
  rows = []
  peers_on = set(x for x in a.peers.split(",") if x)
  for name in a.shapes.split(","):
    size, b, s, pr = SHAPES[name]
    c = make_config(size, b, s, pr, dtype=a.dtype)
    batch = synthetic_batch(b, s, pr)
    fl = flops_lib.pretrain_flops_per_step(c.model, b, s, pr)
    builders = {"bert_jax": lambda: ours(c, batch)}
    if "flax" in peers_on and HAVE_FLAX_PEER:
      builders["hf-flax"] = lambda: flax_peer(c, batch)
    results = measure(builders, a.steps)
    if "torch" in peers_on:
      results["hf-torch"] = peers.run_isolated(
          __file__, ["--worker=hf-torch", f"--shapes={name}", f"--steps={a.steps}",
                     f"--dtype={a.dtype}"])
    for who, r in results.items():
      rows.append(_row(name, who, r, fl, peak, b))
    for who, r in results.items():
      if who != "bert_jax":
        print(f"{'':8s} ratio bert_jax / {who}: "
              f"{r['step_s'] / results['bert_jax']['step_s']:.2f}x", flush=True)
    write_json(a.json, dev, peak, a.dtype, rows)  # after every shape: a cut run keeps them
    if a.levers:
      levers = {
          "mlm-all-pos": lambda: ours(make_config(size, b, s, s), synthetic_batch(b, s, s - 2)),
          "bf16": lambda: ours(make_config(size, b, s, pr, dtype="bfloat16"), batch),
          "scan-layers": lambda: ours(make_config(size, b, s, pr, scan_layers=True), batch),
          "no-donate": lambda: ours(c, batch, donate=False),
          "host-sync": lambda: ours(c, batch, host_sync=True),
      }
      baseline = ours(c, batch)  # compiled once, timed against every lever in turn
      for lever, build in levers.items():
        # Each lever against the baseline, interleaved; MFU counts the baseline's useful
        # FLOPs (P masked positions) in every row.
        r = measure({"bert_jax": lambda: baseline, lever: build}, a.steps)
        rows.append(_row(name, lever, r[lever], fl, peak, b))
        print(f"{'':8s} {lever} / baseline step time: "
              f"{r[lever]['step_s'] / r['bert_jax']['step_s']:.2f}x", flush=True)
      if hugepages.enabled():
        # Process-wide, so measured in a child without the tunable, right after a child
        # with it (two processes in a row, not interleaved).
        env_on = hugepages.environ_with_hugepages()
        env_off = dict(env_on, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
        args = ["--worker=bert_jax", f"--shapes={name}", f"--steps={a.steps}"]
        on = peers.run_isolated(__file__, args, env_on)
        off = peers.run_isolated(__file__, args, env_off)
        rows.append(_row(name, "no-hugepages", off, fl, peak, b))
        print(f"{'':8s} no-hugepages / hugepages step time (one process each): "
              f"{off['step_s'] / on['step_s']:.2f}x", flush=True)
  if not HAVE_FLAX_PEER and "flax" in peers_on:
    print("hf-flax: not run (no .peer/; run `bash benchmarks/setup_peers.sh`)")
  write_json(a.json, dev, peak, a.dtype, rows)


def write_json(path: str, dev, peak: float, dtype: str, rows: list) -> None:
  if path:
    with open(path, "w") as f:
      json.dump({"command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
                 "device": dev.device_kind, "dtype": dtype, "peak_flops": peak,
                 "rows": rows}, f, indent=1)


if __name__ == "__main__":  # every implementation in this run gets huge pages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  main()
