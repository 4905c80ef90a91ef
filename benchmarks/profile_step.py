"""Where a fine-tuning step's CPU time goes: a `perf` profile of bert_jax and HF PyTorch.

  python benchmarks/profile_step.py [--tasks=classification,qa,multiple_choice] \
      [--impls=bert_jax,hf-torch] [--size=base|minilm|tiny] [--steps=4] [--json=out.json] \
      [--batch=B --seq=S]  # another shape, e.g. GLUE's: --size=minilm --batch=32 --seq=80
  python benchmarks/profile_step.py --ablations ...  # bert_jax's step without dropout,
      # with tanh GELU or ReLU (one process each, no perf): what those parts cost

Each (task, implementation) runs alone in a child process: it builds the step exactly as
`benchmarks/finetune_step.py` does (same shapes, recipe and random batch), runs two
warm-up steps, and only then is `perf record` (Linux perf, sampling at 499 Hz: about 1%
overhead, where jax.profiler's trace slowed this step by 60%) attached for --steps timed
steps. The samples are sorted by the symbol they fall in:

  matmul            GEMM kernels: YNNPACK/Eigen (XLA:CPU), MKL/oneDNN (PyTorch)
  generated code    code compiled at run time: XLA's fused elementwise/reduction loops
                    (softmax, LayerNorm, GELU, dropout, AdamW, ...); oneDNN's JIT for PyTorch
  other kernels     elementwise/reduction library kernels (PyTorch's ATen loops,
                    YNNPACK's unary/binary ops)
  thread pool       workers waiting or spinning for work (OpenMP, XLA's pools)
  kernel            the Linux kernel (page faults of fresh allocations, scheduling)
  python            the interpreter
  other             everything else

Per category: its share of the step's CPU samples and CPU seconds per step (share x the
child's user+system CPU time per step, from getrusage). The matmul FLOP rate is the step's
dense-matmul FLOPs divided by the matmul CPU seconds (per core), next to the machine's
per-core peak (the fastest 2048^3 float32 matmul, measured in the same run). The JSON
keeps each child's 25 hottest symbols. Needs `perf` (linux-perf) and permission to
attach to one's own processes (kernel.perf_event_paranoid <= 2).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (benchmarks/, the script's directory)

CATEGORIES = ("matmul", "generated code", "other kernels", "thread pool", "kernel", "python",
              "other")
_MATMUL = re.compile(r"gemm|dot_fp32|gebp|TensorContraction|brgemm|mkl_blas|matmul", re.I)
_POOL = re.compile(r"libgomp|libiomp|Await|wait_for|WorkOnTask|ThreadPool|spin|futex|"
                   r"sched_yield|Parking|park", re.I)
_KERNELS = re.compile(r"ynn::|at::native|at::vec|Sleef|mkl_vml|c10::function_ref|"
                      r"TensorIterator|vectorized", re.I)
SIZES = {"base": (12, 768, 12, 3072), "minilm": (6, 384, 12, 1536), "tiny": (2, 128, 2, 512)}


def categorize(dso: str, sym: str) -> str:
  """One perf sample's (shared object, symbol) -> a CATEGORIES name."""
  if dso.startswith("[kernel"):
    return "kernel"
  if _MATMUL.search(sym):
    return "matmul"
  if _POOL.search(dso) or _POOL.search(sym):
    return "thread pool"
  if dso.startswith("[JIT]") or dso.startswith("perf-"):
    return "generated code"
  if _KERNELS.search(sym):
    return "other kernels"
  if "python" in dso:
    return "python"
  return "other"


def parse_report(text: str) -> list[tuple[float, str, str]]:
  """`perf report --sort dso,sym --stdio` lines -> [(percent, dso, symbol)]."""
  rows = []
  for line in text.splitlines():
    m = re.match(r"\s*([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[[.k]\]\s+(.*)$", line)
    if m:
      rows.append((float(m[1]), m[2], m[3].strip()))
  return rows


def matmul_flops(task: str, size: str, batch: int, choices: int, seq: int) -> float:
  """Dense-matmul FLOPs of one fine-tuning step (forward + backward = 3x forward): the
  encoder's projections and the attention products; embeddings and heads are ~0."""
  layers, h, _, i = SIZES[size]
  tokens = batch * max(choices, 1) * seq
  per_token = layers * (2 * (4 * h * h + 2 * h * i) + 4 * seq * h)
  return 3.0 * tokens * per_token


def set_shape(task: str, batch: int, seq: int) -> tuple[int, int, int, str]:
  """finetune_step's shape of `task` with --batch / --seq in place of its own (0 = keep),
  e.g. the GLUE fine-tuning batch of benchmarks/glue_finetune.py: --batch=32 --seq=80."""
  import finetune_step as fs
  b, choices, s, desc = fs.TASKS[task]
  if batch or seq:
    b, s = batch or b, seq or s
    desc = desc.split(" B")[0] + (f" B{b} x {choices} choices x S{s}" if choices
                                  else f" B{b} S{s}")
    fs.TASKS[task] = (b, choices, s, desc)
  return fs.TASKS[task]


def child(task: str, impl: str, size: str, steps: int, batch: int = 0, seq: int = 0,
          model_overrides: str = "") -> None:
  """Builds the step, warms up, says READY, waits for a line on stdin, runs `steps` timed
  steps and prints their JSON (wall seconds each, CPU seconds per step)."""
  import finetune_step as fs
  set_shape(task, batch, seq)
  layers, hidden, heads, inter = SIZES[size]
  c = fs.make_config(size == "tiny", fs.TASKS[task][2])
  c.model.num_layers, c.model.hidden_size = layers, hidden
  c.model.num_heads, c.model.intermediate_size = heads, inter
  for item in filter(None, model_overrides.split(",")):  # e.g. hidden_act=relu
    key, value = item.split("=")
    c.model[key] = type(c.model[key])(value)
  batch = fs.synthetic_batch(task)
  run = fs.ours(task, c, batch)[0] if impl == "bert_jax" else fs.torch_peer(task, c, batch)[0]
  run()
  run()
  print("READY", flush=True)
  sys.stdin.readline()
  r0, times = resource.getrusage(resource.RUSAGE_SELF), []
  for _ in range(steps):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / steps
  print(json.dumps({"times_s": times, "cpu_s_per_step": cpu}), flush=True)


def profile(task: str, impl: str, size: str, steps: int, batch: int = 0, seq: int = 0) -> dict:
  """Runs one child under `perf record`; returns its times and categorized samples."""
  tmp = tempfile.mkdtemp(prefix="bert_jax_perf_")
  data = os.path.join(tmp, "perf.data")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  p = subprocess.Popen([sys.executable, os.path.abspath(__file__), f"--child={task}:{impl}",
                        f"--size={size}", f"--steps={steps}", f"--batch={batch}",
                        f"--seq={seq}"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True, env=env)
  try:
    for line in p.stdout:
      if line.strip() == "READY":
        break
    else:
      raise SystemExit(f"{task}/{impl}: the child exited before its warm-up ended "
                       f"(rc {p.wait()})")
    perf = subprocess.Popen(["perf", "record", "-F", "499", "-o", data, "-p", str(p.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf attaches to every thread before the timed steps start
    p.stdin.write("go\n")
    p.stdin.flush()
    result = json.loads(p.stdout.readline())
    p.wait()
    perf.wait(timeout=60)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort",
                             "dso,sym", "-g", "none", "--stdio"], capture_output=True,
                            text=True, check=True).stdout
  finally:
    if p.poll() is None:
      p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
  rows = parse_report(report)
  total = sum(r[0] for r in rows) or 1.0
  shares = dict.fromkeys(CATEGORIES, 0.0)
  for pct, dso, sym in rows:
    shares[categorize(dso, sym)] += pct / total
  cpu = result["cpu_s_per_step"]
  return {"task": task, "impl": impl, "size": size,
          "step_s": sorted(result["times_s"])[len(result["times_s"]) // 2],
          "times_s": result["times_s"], "cpu_s_per_step": cpu,
          "shares": shares, "cpu_s": {k: v * cpu for k, v in shares.items()},
          "top_symbols": [{"percent": round(p, 2), "dso": d, "symbol": s[:160]}
                          for p, d, s in rows[:25]]}


# What the step's non-matmul work is made of: the same step with one part changed.
ABLATIONS = (("the fine-tuning recipe", ""),
             ("no dropout (hidden and attention)", "dropout_rate=0,attention_dropout_rate=0"),
             ("no attention-probability dropout", "attention_dropout_rate=0"),
             ("tanh GELU instead of erf", "hidden_act=gelu_tanh"),
             ("ReLU instead of GELU", "hidden_act=relu"),
             ("the fine-tuning recipe, again", ""))


def ablate(task: str, size: str, steps: int, batch: int, seq: int) -> list[dict]:
  """bert_jax's step under each of ABLATIONS, one child process each (no perf)."""
  rows = []
  for name, overrides in ABLATIONS:
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                          f"--child=bert_jax_ablation:{task}", f"--size={size}",
                          f"--steps={steps}", f"--batch={batch}", f"--seq={seq}",
                          f"--model_overrides={overrides}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
      for line in p.stdout:
        if line.strip() == "READY":
          break
      p.stdin.write("go\n")
      p.stdin.flush()
      result = json.loads(p.stdout.readline())
    finally:
      p.wait()
    times = sorted(result["times_s"])
    rows.append({"variant": name, "model_overrides": overrides,
                 "step_s": times[len(times) // 2], "times_s": result["times_s"],
                 "cpu_s_per_step": result["cpu_s_per_step"]})
    print(f"{name:40s} {rows[-1]['step_s'] * 1e3:6.0f} ms, {result['cpu_s_per_step']:.2f} "
          "CPU s per step", flush=True)
  return rows


def peak_matmul_per_core() -> float:
  """Fastest 2048^3 float32 matmul of XLA:CPU, in FLOP/s per core (a child process)."""
  code = ("import sys; sys.path.insert(0, %r); import train_step; "
          "print(train_step.measure_peak_matmul())" % os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  return float(out.stdout.strip().splitlines()[-1]) / (os.cpu_count() or 1)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tasks", default="classification,qa,multiple_choice")
  ap.add_argument("--impls", default="bert_jax,hf-torch")
  ap.add_argument("--size", default="base", choices=sorted(SIZES))
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--batch", type=int, default=0, help="batch instead of the task's own")
  ap.add_argument("--seq", type=int, default=0, help="sequence length instead of the task's")
  ap.add_argument("--json", default="")
  ap.add_argument("--ablations", action="store_true",
                  help="time bert_jax's step with dropout / GELU variants (no perf)")
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  ap.add_argument("--model_overrides", default="", help=argparse.SUPPRESS)
  a = ap.parse_args(argv)
  if a.child:
    task, impl = a.child.split(":")
    if task == "bert_jax_ablation":
      task, impl = impl, "bert_jax"
    return child(task, impl, a.size, a.steps, a.batch, a.seq, a.model_overrides)
  if a.ablations:
    import finetune_step as fs
    task = a.tasks.split(",")[0]
    desc = set_shape(task, a.batch, a.seq)[3]
    rows = ablate(task, a.size, a.steps, a.batch, a.seq)
    if a.json:
      with open(a.json, "w") as f:
        json.dump({"command": "python benchmarks/profile_step.py " + " ".join(
            argv or sys.argv[1:]), "commit": peers.commit(), "shape": desc,
                   "size": a.size, "steps": a.steps,
                   "machine": {**fs.machine(), "load_average": os.getloadavg()},
                   "rows": rows}, f, indent=2)
      print(f"wrote {a.json}")
    return None
  if shutil.which("perf") is None:
    raise SystemExit("profile_step.py needs Linux perf: apt-get install linux-perf")
  import finetune_step as fs
  tasks, impls = a.tasks.split(","), a.impls.split(",")
  for flag, given, known in (("--tasks", tasks, list(fs.TASKS)),
                             ("--impls", impls, ["bert_jax", "hf-torch"])):
    unknown = sorted(set(given) - set(known))
    if unknown:
      raise SystemExit(f"{flag}: unknown {unknown}; use {','.join(known)}")
  peak = peak_matmul_per_core()
  print(f"peak float32 matmul: {peak / 1e9:.0f} GFLOP/s per core", flush=True)
  rows = []
  for task in tasks:
    b, choices, s, desc = set_shape(task, a.batch, a.seq)
    fl = matmul_flops(task, a.size, b, choices, s)
    for impl in impls:
      r = profile(task, impl, a.size, a.steps, a.batch, a.seq)
      r.update(shape=desc, matmul_flops=fl,
               matmul_gflops_per_core=fl / max(r["cpu_s"]["matmul"], 1e-9) / 1e9)
      rows.append(r)
      cells = "  ".join(f"{k} {r['cpu_s'][k]:.2f}" for k in CATEGORIES if r["shares"][k] > 0.005)
      print(f"{desc:40s} {impl:9s} step {r['step_s'] * 1e3:7.0f} ms, CPU "
            f"{r['cpu_s_per_step']:.2f} s/step: {cells}; matmul "
            f"{r['matmul_gflops_per_core']:.0f} GFLOP/s per core", flush=True)
  if a.json:
    record = {"command": "python benchmarks/profile_step.py " + " ".join(argv or sys.argv[1:]),
              "commit": peers.commit(), "machine": {**fs.machine(),
                                                 "load_average": os.getloadavg()},
              "peak_matmul_flops_per_core": peak, "steps": a.steps, "rows": rows}
    with open(a.json, "w") as f:
      json.dump(record, f, indent=2)
    print(f"wrote {a.json}")


if __name__ == "__main__":  # huge pages for every child, as the other step benchmarks
  from bert_jax import hugepages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  main()
