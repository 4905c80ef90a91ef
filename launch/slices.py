"""Cloud TPU accelerator types: how many chips and worker VMs (hosts) a slice has.

The launcher needs the host count to check a multi-host run (a shared gs:// workdir,
one process per host) and to address workers one by one when the coordinator is given
explicitly. The number in an accelerator type counts TensorCores for v2/v3/v4/v5p
(two per chip) and chips for v5e/v6e; every generation puts at most 4 chips on a host
of a multi-host slice (v5e/v6e single-host slices go up to 8 chips on one host).
Source: cloud.google.com/tpu/docs (system architecture pages of each generation).
"""
from __future__ import annotations

import dataclasses
import re

from bert_jax import hardware

# The TPU generations and their per-chip facts live in one table: bert_jax/hardware.py.
_GENERATIONS = dict(hardware.TPU_GENERATIONS)
_ALIASES = dict(hardware.TPU_ALIASES)


class SliceError(ValueError):
  """An accelerator type we cannot interpret; the message lists the valid forms."""


@dataclasses.dataclass(frozen=True)
class SliceInfo:
  """One TPU slice: e.g. v4-32 = 16 chips on 4 hosts."""
  accelerator_type: str
  generation: str
  chips: int
  hosts: int
  default_runtime: str

  @property
  def multi_host(self) -> bool:
    return self.hosts > 1

  @property
  def chips_per_host(self) -> int:
    return self.chips // self.hosts


def parse_accelerator_type(accelerator_type: str) -> SliceInfo:
  """'v4-32' -> SliceInfo(chips=16, hosts=4, ...); a clear SliceError otherwise."""
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type.strip())
  gen = _ALIASES.get(m.group(1), m.group(1)) if m else None
  if not m or gen not in _GENERATIONS:
    raise SliceError(
        f"--accelerator_type={accelerator_type!r} is not a TPU type: use <generation>-<size> "
        f"with generation one of {sorted(_GENERATIONS)}, e.g. v4-8 (one host) or v4-32 "
        "(4 hosts); `gcloud compute tpus accelerator-types list --zone=ZONE` lists them.")
  size = int(m.group(2))
  g = _GENERATIONS[gen]
  cores_per_chip, chips_per_host = g.cores_per_chip, g.chips_per_host
  max_single, runtime = g.max_single_host_chips, g.default_runtime
  if size % cores_per_chip:
    raise SliceError(f"--accelerator_type={accelerator_type!r}: {gen} sizes count "
                     f"TensorCores, {cores_per_chip} per chip; use a multiple of "
                     f"{cores_per_chip}, e.g. {gen}-8.")
  chips = size // cores_per_chip
  if chips <= max_single:
    hosts = 1
  elif chips % chips_per_host:
    raise SliceError(f"--accelerator_type={accelerator_type!r}: a multi-host {gen} slice "
                     f"has a multiple of {chips_per_host} chips.")
  else:
    hosts = chips // chips_per_host
  return SliceInfo(f"{m.group(1)}-{size}", gen, chips, hosts, runtime)
