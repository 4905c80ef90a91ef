"""Device mesh from config, logical-axis rules, and shardings for params/state/batch.

Every parameter and key activation is named with logical axes (model.py). One rule table
maps them onto mesh axes, so data parallel, FSDP (ZeRO-3) and Megatron tensor parallel
are just mesh shapes: (-1,1,1), (1,-1,1), (1,1,-1) or any mix of (data, fsdp, tensor).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bert_jax.config import LOGICAL_AXIS_RULES, ConfigError

# logical axis -> mesh axis (or axes, or None = replicated): config.mesh.rules' default.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = LOGICAL_AXIS_RULES
# The rules each mesh was made with (make_mesh(config.mesh)); others use DEFAULT_RULES.
_MESH_RULES: dict[Mesh, tuple] = {}

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh of config.mesh.shape over config.mesh.axes; one -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  axes = tuple(mesh_cfg.axes)
  shape = [int(s) for s in mesh_cfg.shape]
  n = len(devices)
  if len(axes) != len(shape):
    raise ConfigError(
        f"config.mesh.axes={axes} and config.mesh.shape={tuple(shape)} differ in length.")
  if shape.count(-1) > 1:
    raise ConfigError(f"config.mesh.shape={tuple(shape)}: at most one -1 is allowed.")
  known = math.prod(s for s in shape if s != -1)
  if known <= 0 or n % known:
    raise ConfigError(
        f"config.mesh.shape={tuple(shape)} does not divide the {n} available devices: "
        f"choose sizes whose product divides {n}, e.g. --config.mesh.shape='({n},1,1)'.")
  shape = [n // known if s == -1 else s for s in shape]
  if math.prod(shape) != n:
    raise ConfigError(
        f"config.mesh.shape={tuple(shape)} uses {math.prod(shape)} of {n} devices: the "
        f"product must equal {n}; put -1 on one axis to take the rest.")
  try:
    from jax.experimental import mesh_utils
    dev_array = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # CPU/fake devices without topology info: row-major is fine.
    dev_array = np.asarray(devices).reshape(shape)
  mesh = Mesh(dev_array, axes)
  rules = mesh_cfg.get("rules", None)
  if rules is not None:
    _MESH_RULES[mesh] = check_rules(rules, axes)
  return mesh


def check_rules(rules, axes: Sequence[str]) -> tuple[tuple[str, Any], ...]:
  """config.mesh.rules -> a tuple of (logical, mesh axes) pairs; ConfigError if malformed."""
  out = []
  for rule in rules:
    ok = (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str))
    physical = rule[1] if ok else None
    names = () if physical is None else (physical,) if isinstance(physical, str) else physical
    if not ok or not all(isinstance(a, str) for a in names):
      raise ConfigError(
          f"config.mesh.rules: {rule!r} is not a (logical axis, mesh axis | (mesh axes) | "
          "None) pair, e.g. ('mlp', 'tensor') or ('batch', ('data', 'fsdp')).")
    unknown = [a for a in names if a not in axes]
    if unknown:
      raise ConfigError(
          f"config.mesh.rules: {rule!r} names mesh axis {unknown[0]!r}, which "
          f"config.mesh.axes={tuple(axes)} does not have; use one of {tuple(axes)}.")
    out.append((rule[0], None if physical is None else
                physical if isinstance(physical, str) else tuple(physical)))
  return tuple(out)


def rules_for(mesh: Mesh, rules=None) -> tuple[tuple[str, Any], ...]:
  """The rules (default: the mesh's config.mesh.rules, else DEFAULT_RULES) without the
  mesh axes the mesh does not have (e.g. a mesh with only 'data')."""
  if rules is None:
    rules = _MESH_RULES.get(mesh, DEFAULT_RULES)
  out = []
  for logical, physical in rules:
    if physical is None:
      out.append((logical, None))
      continue
    phys = (physical,) if isinstance(physical, str) else tuple(physical)
    phys = tuple(a for a in phys if a in mesh.axis_names)
    out.append((logical, phys if len(phys) > 1 else (phys[0] if phys else None)))
  return tuple(out)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=None):
  """Mesh + logical rules in scope, so nn.with_logical_constraint resolves inside jit."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_for(mesh, rules)):
    yield


def _axis_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  names = (entry,) if isinstance(entry, str) else entry
  return math.prod(mesh.shape[a] for a in names)


def logical_to_shardings(abstract_tree, logical_specs, mesh: Mesh, rules=None):
  """Logical PartitionSpecs -> NamedShardings; a dimension the mesh axes do not divide
  (e.g. vocab 30522 over 4 tensor devices) is replicated instead of failing."""
  mesh_specs = nn.logical_to_mesh(logical_specs, rules_for(mesh, rules))

  def fix(x, spec):
    if spec is None or not hasattr(x, "shape"):
      return NamedSharding(mesh, P())
    entries = list(spec) + [None] * (len(x.shape) - len(spec))
    entries = [e if (e is not None and x.shape[i] % _axis_size(mesh, e) == 0) else None
               for i, e in enumerate(entries)]
    return NamedSharding(mesh, P(*entries))

  return jax.tree_util.tree_map(fix, abstract_tree, mesh_specs,
                                is_leaf=lambda s: isinstance(s, P) or s is None)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data and fsdp axes; the rest replicated."""
  return NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.axis_names)))


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)


def check_batch_size(batch_size: int, mesh: Mesh, key: str = "config.train.batch_size",
                     micro_steps: int = 1) -> None:
  """The global batch (per micro-step) must split evenly over the data-parallel devices."""
  dp = data_parallel_size(mesh) * jax.process_count() // max(1, jax.process_count())
  if batch_size % micro_steps:
    raise ConfigError(
        f"{key}={batch_size} is not divisible by config.train.grad_accum_steps={micro_steps}.")
  micro = batch_size // micro_steps
  if micro % dp:
    raise ConfigError(
        f"{key}={batch_size} (micro-batch {micro}) is not divisible by the {dp} "
        f"data-parallel devices of mesh {dict(mesh.shape)}: use a multiple of {dp}.")


def strip_boxes(tree):
  """Partitioned boxes -> their values, with no sharding constraint (for abstract trees)."""
  return jax.tree_util.tree_map(
      lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
      is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
