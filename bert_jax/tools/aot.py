"""The pod without a pod: compile the sharded pre-training step for a TPU slice we lack.

libtpu (the `jax[tpu]` extra) carries the real TPU compiler, and
`jax.experimental.topologies.get_topology_desc` hands out compile-only devices of any
slice ("v2:8x8", "v4:4x4x4", "v5e:16x16"). On a mesh of those devices we lower and
compile the very step the training loop runs (train.py's model, loss and denominators on
train_lib.make_train_step, with the config's batch, sequence length, dtype, remat and
gradient accumulation) and read off what the TPU program would need and do:

  * parameter / optimizer bytes per device (from the state's shardings),
  * peak HBM per device (`memory_analysis()`) against the chip's HBM (TPU_CHIPS below),
  * FLOPs per device (`cost_analysis()['flops']`) next to the model FLOPs (flops.py),
  * the compiler's own step-time estimate (`cost_analysis()['optimal_seconds']`) and the
    tokens/s/chip and MFU it implies,
  * the count and size of every collective in the compiled HLO.

These are the compiler's estimates, not measurements. Two quirks of the cost model
(XLA's HloCostAnalysis, which libtpu's extends) are handled:
  * it counts the body of a `while` loop once. With `grad_accum_steps=k>1` the step time
    is k times that of the compiled micro-batch step (batch/k, no loop), an upper bound
    (the gradient all-reduce and the update are counted k times, not once); a loop in
    the priced program itself (`scan_layers=True`) gives no estimate rather than an
    under-count (the pod configs unroll the layers);
  * it prices a custom call outside a fusion (libtpu's `ConcatBitcast`, which joins
    buffers) at -1 s, an "unknown" marker that we add back (unpriced_custom_calls: such a
    copy costs microseconds), following the cost model's own sums: a `conditional` keeps
    its most expensive branch, so markers in the branch it drops are not added back.
An estimate still faster than the FLOPs the compiler counts allow at the chip's peak is
reported as unusable.

A config that does not fit is reported with the memory it would need, not a crash.

  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/paper_large_v2.py \
      --topology=v2:8x8 [--config.train.batch_size=512] [--json]
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from typing import Any

import jax
import ml_collections

from bert_jax import flops as flops_lib
from bert_jax import hardware, paths, preflight
from bert_jax import partitioning
from bert_jax.config import ConfigError
from bert_jax.tasks import pretrain

GiB = hardware.GiB
TPU_CHIPS = hardware.TPU_GENERATIONS  # the one accelerator table

COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all",
               "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
                "f8e4m3fn": 1, "f8e5m2": 1}


class AotError(ValueError):
  """A topology or flag the AOT tool cannot use; the message names the fix."""


# ---------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------

def parse_topology(name: str) -> tuple[str, str, tuple[int, ...]]:
  """'v4:4x4x4' or 'v4-128' -> (generation 'v4', libtpu name 'v4:4x4x4', dims (4,4,4))."""
  topo = hardware.ACCELERATOR_TYPES.get(name, name)
  m = re.fullmatch(r"(v\d+[a-z]?):(\d+(?:x\d+)*)", topo)
  if not m or m.group(1) not in TPU_CHIPS:
    raise AotError(
        f"--topology={name!r}: use <generation>:<chips per dimension> with generation in "
        f"{sorted(TPU_CHIPS)}, e.g. v2:8x8, v4:4x4x4, v5e:16x16 (or one of "
        f"{sorted(hardware.ACCELERATOR_TYPES)}).")
  return m.group(1), topo, tuple(int(d) for d in m.group(2).split("x"))


def topology_devices(name: str) -> list[jax.Device]:
  """Compile-only devices of a TPU slice (needs libtpu; no TPU hardware is touched)."""
  gen, topo, _ = parse_topology(name)
  try:
    import libtpu  # noqa: F401  (the compiler lives here)
  except ImportError as e:
    raise AotError("libtpu is not installed: pip install 'jax[tpu]==0.10.2' (or "
                   "pip install -e '.[test]') to compile for TPU topologies.") from e
  # Compile-only use: other processes may hold libtpu's lock file, and there is no GCE
  # metadata server to ask for the (absent) TPU.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  from jax.experimental import topologies
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=topo, chip_config_name=TPU_CHIPS[gen].chip_config,
      chips_per_host_bounds=(2, 2, 1), num_slices=1)
  return list(desc.devices)


# ---------------------------------------------------------------------------------------
# The step: the same pieces train.train_and_evaluate puts together
# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Reading the compiled program
# ---------------------------------------------------------------------------------------

def _shape_bytes(shape_text: str) -> tuple[int, dict[str, int]]:
  """'(bf16[2,64]{..}, f32[8]{..})' -> total bytes and bytes by dtype (layouts ignored)."""
  total, by_dtype = 0, {}
  for dt, dims in re.findall(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]", shape_text):
    if dt not in _DTYPE_BYTES:
      continue
    n = math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES[dt]
    total += n
    by_dtype[dt] = by_dtype.get(dt, 0) + n
  return total, by_dtype


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.+?) ([a-z][a-z\-]*)\(")


def collective_stats(hlo_text: str) -> dict[str, dict[str, Any]]:
  """Count and per-device bytes of each collective kind in compiled HLO text.

  Bytes are the full buffer each device sends into the collective (all-reduce and
  reduce-scatter: the buffer reduced; all-gather: the gathered result), summed over the
  HLO's static instructions (a loop body counts once). On TPU a reduce-scatter is an
  `all-reduce` inside a fusion computation named `all-reduce-scatter*`; async pairs are
  counted at their `-done` (whose shape is the result).
  """
  stats = {k: {"count": 0, "bytes": 0, "bytes_by_dtype": {}} for k in COLLECTIVES}
  computation = ""
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      computation = m.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    shape, op = m.groups()
    base = op[:-5] if op.endswith("-done") else op
    if base not in COLLECTIVES or op.endswith("-start"):
      continue
    kind = base
    if base == "all-reduce" and computation.startswith("all-reduce-scatter"):
      kind = "reduce-scatter"
    n, by_dtype = _shape_bytes(shape)
    s = stats[kind]
    s["count"] += 1
    s["bytes"] += n
    for dt, b in by_dtype.items():
      s["bytes_by_dtype"][dt] = s["bytes_by_dtype"].get(dt, 0) + b
  return stats


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  """Compiled HLO text -> ({computation name: its instruction lines}, ENTRY's name)."""
  comps, entry, name = {}, "", None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      name = m.group(1)
      comps[name] = []
      if line.startswith("ENTRY"):
        entry = name
    elif name is not None and line.strip() != "}":
      comps[name].append(line)
  return comps, entry


def _callees(line: str, key: str) -> list[str]:
  """Computations an instruction names with `key=%c` or `key={%a, %b}`."""
  m = re.search(rf"\b{key}=(\{{[^}}]*\}}|%?[\w.\-]+)", line)
  return re.findall(r"%?([\w.\-]+)", m.group(1)) if m else []


# Custom-call targets libtpu's cost model does price: AllocateBuffer (the zeroed gradient
# accumulator of grad_accum_steps>1; a tiny step with 38 of them outside fusions still
# costs +0.1 ms, no -38 s).
PRICED_CUSTOM_CALLS = frozenset({"AllocateBuffer"})


def unpriced_custom_calls(hlo_text: str) -> int:
  """The -1 s "unknown" markers that reach the cost model's total `optimal_seconds`.

  XLA's HloCostAnalysis (which libtpu's extends) prices a custom call it does not know
  at -1 for every property (HandleCustomCall): on TPU, `ConcatBitcast`; libtpu prices
  the targets in PRICED_CUSTOM_CALLS itself; inside a fusion the fusion's own cost
  stands instead. Nested computations are summed the way HandleWhile/HandleConditional
  do it: a `while` adds its body and condition once, a `conditional` keeps the per-key
  maximum over its branches. So the markers counted here are: unfused custom calls of
  ENTRY, plus those of called / while computations, plus for each conditional the
  markers of the branch with the FEWEST of them, the one whose (marker-lowered) total is
  the maximum: a branch's real cost is milliseconds, a marker a whole second. (Counting
  every branch over-counted by one second per marker in the branch not taken: on v4 the
  train step's skip-update branch holds 8 ConcatBitcast copies, and BERT-Large batch 256
  on v4:4x4x4 read 8,014 ms instead of 14 ms.)
  """
  comps, entry = _computations(hlo_text)
  memo: dict[str, int] = {}

  def count(name: str) -> int:
    if name in memo:
      return memo[name]
    memo[name] = 0  # guards against a malformed cycle
    n = 0
    for line in comps.get(name, ()):
      m = _INSTRUCTION.match(line)
      op = m.group(2) if m else ""
      if op == "custom-call":
        target = re.search(r'custom_call_target="([^"]*)"', line)
        n += not (target and target.group(1) in PRICED_CUSTOM_CALLS)
      elif op == "while":
        n += sum(count(c) for c in _callees(line, "body") + _callees(line, "condition"))
      elif op == "conditional":
        branches = (_callees(line, "branch_computations")
                    or _callees(line, "true_computation") + _callees(line, "false_computation"))
        n += min((count(c) for c in branches), default=0)
      elif op in ("call", "async-start"):
        n += sum(count(c) for c in _callees(line, "to_apply") + _callees(line, "calls"))
    memo[name] = n
    return n

  return count(entry)


def while_loops(hlo_text: str) -> list[int]:
  """Trip counts (0 = unknown) of the `while` loops in compiled HLO text."""
  counts = []
  for line in hlo_text.splitlines():
    if re.search(r" while\(", line) and "=" in line:
      m = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      counts.append(int(m.group(1)) if m else 0)
  return counts


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------

def compile_report(config: ml_collections.ConfigDict, topology: str,
                   hlo_path: str | None = None) -> dict[str, Any]:
  """Lowers and compiles the config's train step for `topology`; returns the report dict.

  Never raises for a program that does not fit: the report has fits=False and the HBM
  the compiler says it would need.
  """
  gen, topo, dims = parse_topology(topology)
  chip = TPU_CHIPS[gen]
  devices = topology_devices(topo)
  n_dev = len(devices)
  n_chips = n_dev // chip.devices_per_chip
  hbm = chip.hbm_bytes_per_chip // chip.devices_per_chip
  mesh = partitioning.make_mesh(config.mesh, devices=devices)
  from bert_jax import train
  train.check_config(config, devices)
  t, d = config.train, config.data
  tokens = t.batch_size * d.max_seq_length
  model_flops = flops_lib.pretrain_flops_per_step(
      config.model, t.batch_size, d.max_seq_length, d.max_predictions_per_seq)
  report: dict[str, Any] = {
      "topology": topo, "device_kind": devices[0].device_kind, "devices": n_dev,
      "chips": n_chips, "devices_per_chip": chip.devices_per_chip,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "batch_size": t.batch_size, "seq_len": d.max_seq_length,
      "max_predictions": d.max_predictions_per_seq, "grad_accum_steps": t.grad_accum_steps,
      "dtype": config.model.dtype, "remat": config.model.remat,
      "scan_layers": config.model.scan_layers, "optimizer": t.optimizer,
      "hbm_per_device": hbm, "hbm_source": chip.source,
      "peak_flops_per_chip": chip.peak_flops_per_chip,
      "model_flops_per_step": model_flops, "num_steps": t.num_steps,
  }
  step, state = pretrain.build_step(config, mesh)
  report["param_bytes_per_device"] = preflight.bytes_per_device(state.params)
  report["opt_state_bytes_per_device"] = preflight.bytes_per_device(state.opt_state)
  t0 = time.time()
  compiled, oom = _compile(step, state, config, mesh)
  report["compile_s"] = time.time() - t0
  if oom:
    report.update(fits=False, peak_bytes_per_device=oom[0], compiler_hbm_bytes=oom[1],
                  error=oom[2])
    return report
  mem = compiled.memory_analysis()
  text = compiled.as_text()
  if hlo_path:
    paths.write_text(hlo_path, text)
  peak = int(getattr(mem, "peak_memory_in_bytes", 0) or (
      mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
      + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes))
  report.update(
      fits=peak <= hbm, peak_bytes_per_device=peak,
      argument_bytes_per_device=int(mem.argument_size_in_bytes),
      temp_bytes_per_device=int(mem.temp_size_in_bytes),
      code_bytes_per_device=int(mem.generated_code_size_in_bytes),
      while_loop_trip_counts=[n for n in while_loops(text) if n != 1],
      collectives=collective_stats(text))
  report.update(_priced(compiled, text, chip))
  k = t.grad_accum_steps
  report["step_time_method"] = "compiled step"
  if k > 1:
    # The accumulation scan is a `while` whose body the cost model counts once. Price one
    # micro-batch step instead (batch/k, no loop: forward, backward, gradient all-reduce,
    # update) and take k of them. That counts the all-reduce and the optimizer update k
    # times instead of once, which outweighs the k gradient additions it leaves out: an
    # upper bound on the step time, never an under-count.
    micro = config.copy_and_resolve_references()
    micro.train.batch_size = t.batch_size // k
    micro.train.grad_accum_steps = 1
    m_step, m_state = pretrain.build_step(micro, mesh)
    t0 = time.time()
    m_compiled, m_oom = _compile(m_step, m_state, micro, mesh)
    report["compile_s"] += time.time() - t0
    if m_oom:
      raise AotError(f"the micro-batch step (batch {micro.train.batch_size}) does not fit "
                     f"although the accumulating step does: {m_oom[2]}")
    m_text = m_compiled.as_text()
    m = _priced(m_compiled, m_text, chip)
    report["micro_step"] = dict(m, batch_size=micro.train.batch_size,
                                while_loop_trip_counts=[
                                    n for n in while_loops(m_text) if n != 1])
    report["step_time_method"] = (f"{k} x compiled micro-batch step (batch "
                                  f"{micro.train.batch_size}): an upper bound")
    loops = report["micro_step"]["while_loop_trip_counts"]
    seconds = k * m["step_time_s"] if m["step_time_s"] else None
  else:
    loops = report["while_loop_trip_counts"]
    seconds = report["step_time_s"]
  if loops:
    # A loop left in the priced program (scan_layers=True) counts its body once: no
    # whole-step figure rather than an under-count.
    seconds = None
    report["step_time_method"] = (f"none: while loops with trip counts {loops} are priced "
                                  "once (use --config.model.scan_layers=False)")
  report["step_time_s"] = seconds
  if seconds:
    report.update(
        tokens_per_s_per_chip=tokens / seconds / n_chips,
        mfu=model_flops / (seconds * n_chips * chip.peak_flops_per_chip),
        recipe_hours=t.num_steps * seconds / 3600)
  return report


def _compile(step, state, config, mesh):
  """Lowers and compiles the step -> (compiled, None), or (None, (needed, available,
  message)) when XLA:TPU runs out of HBM; any other compiler error is raised."""
  batch = pretrain.abstract_batch(config, mesh)
  with partitioning.activate(mesh):
    lowered = step.jitted.lower(state, batch)
  try:
    return lowered.compile(), None
  except Exception as e:  # XLA raises a runtime error; only an OOM is a report.
    oom = preflight.parse_oom(str(e))
    if oom is None:
      raise
    return None, (*oom, str(e).strip().splitlines()[0][:300])


def _priced(compiled, text: str, chip: hardware.TpuGeneration) -> dict[str, Any]:
  """The cost model's figures for one compiled program, its -1 s markers undone.

  step_time_s is None when the result is not credible: not positive, or faster than the
  FLOPs the compiler itself counts at the chip's peak (another marker hid in the sum).
  """
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  raw = float(cost.get("optimal_seconds", -1.0))
  unpriced = unpriced_custom_calls(text)
  seconds = raw + unpriced
  flops_dev = float(cost.get("flops", 0.0))
  floor = flops_dev / (chip.peak_flops_per_chip / chip.devices_per_chip)
  return dict(
      compiler_flops_per_device=flops_dev,
      compiler_bytes_accessed_per_device=float(cost.get("bytes accessed", 0.0)),
      compiler_optimal_seconds=raw, unpriced_custom_calls=unpriced,
      step_time_s=seconds if seconds >= floor and seconds > 0 else None)


def _gib(n) -> str:
  return f"{n / GiB:.2f} GiB"


def format_report(r: dict[str, Any]) -> str:
  """Human-readable report (the CLI's default output)."""
  lines = [
      f"topology   {r['topology']}: {r['devices']} x {r['device_kind']} devices = "
      f"{r['chips']} chips ({r['devices_per_chip']} device(s)/chip)",
      f"mesh       {r['mesh']}",
      f"step       batch {r['batch_size']} x seq {r['seq_len']} (P={r['max_predictions']}), "
      f"accum {r['grad_accum_steps']}, {r['dtype']}, remat={r['remat']}, "
      f"scan_layers={r['scan_layers']}, {r['optimizer']}",
      f"state      params {_gib(r['param_bytes_per_device'])}/device, optimizer "
      f"{_gib(r['opt_state_bytes_per_device'])}/device",
  ]
  hbm = f"HBM {_gib(r['hbm_per_device'])}/device [{r['hbm_source']}]"
  if not r["fits"]:
    lines.append(f"memory     DOES NOT FIT: needs {_gib(r['peak_bytes_per_device'])}/device, "
                 f"compiler capacity {_gib(r.get('compiler_hbm_bytes', r['hbm_per_device']))}"
                 f"; {hbm}")
    lines.append(f"compiler   {r.get('error', '')}")
    return "\n".join(lines)
  lines.append(f"memory     peak {_gib(r['peak_bytes_per_device'])}/device (arguments "
               f"{_gib(r['argument_bytes_per_device'])}, temp "
               f"{_gib(r['temp_bytes_per_device'])}) of {hbm}: fits")
  lines.append(f"flops      compiler {r['compiler_flops_per_device'] * r['devices'] / 1e12:.1f} "
               f"TFLOP/step (all devices), model {r['model_flops_per_step'] / 1e12:.1f} "
               f"TFLOP/step (flops.py)")
  if r["step_time_s"]:
    lines.append(
        f"estimate   {r['step_time_s'] * 1e3:.1f} ms/step ({r['step_time_method']}; the "
        f"compiler's cost model, not a measurement) -> {r['tokens_per_s_per_chip']:,.0f} "
        f"tokens/s/chip, MFU {100 * r['mfu']:.1f}% of {r['peak_flops_per_chip'] / 1e12:.0f} "
        f"TFLOP/s/chip; {r['num_steps']:,} steps = {r['recipe_hours']:.1f} h "
        f"({r['recipe_hours'] / 24:.2f} days)")
  elif r["step_time_method"].startswith("none"):
    lines.append(f"estimate   {r['step_time_method']}")
  else:
    p = r.get("micro_step", r)
    lines.append(f"estimate   none usable: the compiler's optimal_seconds is "
                 f"{p['compiler_optimal_seconds']:.3g} s with {p['unpriced_custom_calls']} "
                 "unpriced custom calls (below its own FLOPs at peak)")
  for kind, s in r["collectives"].items():
    if s["count"]:
      dts = ", ".join(f"{dt} {b / 2**20:.1f} MiB" for dt, b in sorted(s["bytes_by_dtype"].items()))
      lines.append(f"collective {kind:18s} x{s['count']:<4d} {s['bytes'] / 2**20:10.1f} MiB/device"
                   f"  ({dts})")
  lines.append(f"compile    {r['compile_s']:.0f} s on this host")
  return "\n".join(lines)


def main(argv):
  from absl import flags
  del argv
  config = flags.FLAGS.config
  try:
    report = compile_report(config, flags.FLAGS.topology, flags.FLAGS.dump_hlo or None)
  except (AotError, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if flags.FLAGS.json_out:
    paths.write_text(flags.FLAGS.json_out, json.dumps(report, indent=1, sort_keys=True))
  print(json.dumps(report, indent=1, sort_keys=True) if flags.FLAGS.json
        else format_report(report))
  return 0


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/*.py to compile.",
                                  lock_config=True)
  flags.DEFINE_string("topology", "v4:2x2x1",
                      "TPU slice: v2:8x8, v4:4x4x4, v5e:16x16, ... or v4-128, v5e-256.")
  flags.DEFINE_bool("json", False, "Print the report as JSON.")
  flags.DEFINE_string("json_out", "", "Also write the JSON report to this file.")
  flags.DEFINE_string("dump_hlo", "", "Write the compiled HLO text to this file.")
  flags.mark_flags_as_required(["config"])
  jax.config.update("jax_platforms", "cpu")  # nothing waits for TPU hardware
  app.run(main)
