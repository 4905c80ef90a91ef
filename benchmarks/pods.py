"""The README "Pods" table: the real train step compiled for TPU slices we do not have.

Runs `python -m bert_jax.tools.aot ... --json_out` once per row (one process each, so a large
compile's memory is returned before the next), then prints the table in Markdown with
the command of every row. Everything is the TPU compiler's estimate (libtpu's cost model
and memory assignment), not a measurement on hardware.

  JAX_PLATFORMS=cpu python benchmarks/pods.py [--rows=paper,today,nofit] [--out=DIR] [--reuse]

A row with gradient accumulation (k micro-batches) is priced as k compiled micro-batch
steps (bert_jax/tools/aot.py): an upper bound, marked "<=" in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_DAYS = 4.0  # Devlin et al. 2018, A.2: each model pre-trained for 4 days.

# name, group, config (with :arg), topology, overrides
ROWS = [
    ("base-p1-v2:4x4", "paper", "configs/pods/paper_base_v2.py:1", "v2:4x4", []),
    ("base-p2-v2:4x4", "paper", "configs/pods/paper_base_v2.py:2", "v2:4x4", []),
    ("large-p1-v2:8x8", "paper", "configs/pods/paper_large_v2.py:1", "v2:8x8", []),
    ("large-p2-v2:8x8", "paper", "configs/pods/paper_large_v2.py:2", "v2:8x8", []),
    ("large-p1-b256-v4:4x4x4", "paper", "configs/pods/paper_large_v2.py:1", "v4:4x4x4", []),
    ("lamb-8k-v4-32", "today", "configs/pods/lamb_large.py:1,8192", "v4:2x2x4", []),
    ("lamb-32k-v4-128", "today", "configs/pods/lamb_large.py:1,32768", "v4:4x4x4", []),
    ("lamb-32k-v5e-256", "today", "configs/pods/lamb_large.py:1,32768,2", "v5e:16x16", []),
    ("nofit-64k-v2:4x4", "nofit", "configs/pods/lamb_large.py:1,65536", "v2:4x4",
     ["--config.model.remat=none", "--config.train.grad_accum_steps=1"]),
]


def command(row) -> list[str]:
  _, _, config, topology, overrides = row
  return [sys.executable, "-m", "bert_jax.tools.aot", f"--config={config}",
          f"--topology={topology}", *overrides]


def run_row(row, out_dir: pathlib.Path, reuse: bool = False) -> dict:
  path = out_dir / f"{row[0]}.json"
  if reuse and path.exists():  # from an earlier run into the same --out
    return dict(json.loads(path.read_text()), name=row[0])
  cmd = command(row) + [f"--json_out={path}"]
  t0 = time.time()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  print(proc.stdout, flush=True)
  if proc.returncode != 0:
    print(proc.stderr[-3000:], file=sys.stderr, flush=True)
    return {"name": row[0], "error": proc.stderr.strip().splitlines()[-1:]}
  r = json.loads(path.read_text())
  r.update(name=row[0], wall_s=time.time() - t0)
  return r


def _gib(n) -> str:
  return f"{n / 2**30:.1f}"


def markdown(rows: list[dict]) -> str:
  head = ("| row | topology (chips) | mesh | batch x seq | per-device HBM: peak / capacity"
          " GiB | compiler step time | tokens/s/chip | MFU | recipe wall-clock |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  lines = [head]
  for r in rows:
    if "fits" not in r:  # the aot run failed (an OOM is a report with fits=False)
      lines.append(f"| {r['name']} | error: {r['error']} | | | | | | | |")
      continue
    mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1"
    mem = f"{_gib(r['peak_bytes_per_device'])} / {_gib(r['hbm_per_device'])}"
    if not r["fits"]:
      lines.append(f"| {r['name']} | {r['topology']} ({r['chips']}) | {mesh} | "
                   f"{r['batch_size']} x {r['seq_len']} | **does not fit**: needs {mem} | "
                   "– | – | – | – |")
      continue
    dt = r.get("step_time_s")
    k = r.get("grad_accum_steps", 1)
    # k micro-batch steps: the time an upper bound, the rates lower bounds.
    most, least = ("≤ ", "≥ ") if k > 1 else ("", "")
    est = (f"{most}{dt * 1e3:.0f} ms | {least}{r['tokens_per_s_per_chip']:,.0f} | "
           f"{least}{100 * r['mfu']:.0f}% | {most}{r['recipe_hours']:.1f} h for "
           f"{r['num_steps']:,} steps" if dt else "none usable | – | – | –")
    batch = f"{r['batch_size']} x {r['seq_len']}" + (
        f" ({k} x {r['batch_size'] // k})" if k > 1 else "")
    lines.append(f"| {r['name']} | {r['topology']} ({r['chips']}) | {mesh} | "
                 f"{batch} | {mem} | {est} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default="paper,today,nofit", help="groups or row names")
  p.add_argument("--out", default="/tmp/bert_jax_pods")
  p.add_argument("--reuse", action="store_true",
                 help="take rows already in --out from an earlier run instead of compiling")
  a = p.parse_args(argv)
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  results = []
  order = [r for w in a.rows.split(",") for r in ROWS if w in (r[0], r[1])]  # as asked
  for row in order:
    print("$ JAX_PLATFORMS=cpu python " + " ".join(command(row)[1:]), flush=True)
    results.append(run_row(row, out, a.reuse))
  (out / "pods.json").write_text(json.dumps(results, indent=1, sort_keys=True))
  print(markdown(results))
  total = 0.0
  for r in results:
    if r.get("name", "").startswith("large-p") and r.get("recipe_hours"):
      total += r["recipe_hours"] if "v2:8x8" in r["name"] else 0.0
      print(f"{r['name']}: {r['recipe_hours'] / 24:.2f} days at this phase's step time for "
            f"its {r['num_steps']:,} steps")
  if total:
    print(f"BERT-Large on the paper's 64 v2 chips, both phases: {total / 24:.2f} days "
          f"(paper: {PAPER_DAYS:.0f} days)")


if __name__ == "__main__":
  main()
