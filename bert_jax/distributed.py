"""Multi-host start-up: `jax.distributed` from flags, the environment, or the TPU pod itself.

Every host of a pod runs the same command; before any jax computation each process must
join JAX's distributed runtime so that `jax.devices()` lists the devices of all hosts,
jitted steps run as one SPMD program across them, and orbax checkpoints are written and
read cooperatively. Where the process learns its place, first match wins:

1. flags `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`;
2. environment `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`
   (handy for schedulers that template env vars rather than argv);
3. a Cloud TPU VM (TPU chips present, or TPU_WORKER_HOSTNAMES lists several workers):
   `jax.distributed.initialize()` with no arguments, which reads the slice's metadata;
4. otherwise a single process: nothing to initialise.

Off TPU, cross-process collectives on CPU go through gloo over TCP (jax's
`jax_cpu_collectives_implementation`; gloo is the default in jax 0.10, we set it
explicitly so an older default never silently leaves the processes unable to all-reduce).
This is how the tests run 2 processes x 4 fake CPU devices on localhost.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class DistributedError(ValueError):
  """Inconsistent multi-host settings; the message names the flag or variable to fix."""


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """Where this process sits in an explicitly configured multi-process run."""
  coordinator_address: str
  num_processes: int
  process_id: int


def _int(value, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DistributedError(f"{name}={value!r} is not an integer.") from None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None,
            environ: Mapping[str, str] | None = None) -> ProcessSpec | None:
  """Flags, else environment variables -> a ProcessSpec; None when neither is given.

  Raises DistributedError when only some of the three are given or they disagree.
  """
  env = os.environ if environ is None else environ
  values = {
      "coordinator_address": (coordinator_address or env.get(ENV_COORDINATOR) or None,
                              f"--coordinator_address (or ${ENV_COORDINATOR})"),
      "num_processes": (num_processes if num_processes is not None else
                        _int(env.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES),
                        f"--num_processes (or ${ENV_NUM_PROCESSES})"),
      "process_id": (process_id if process_id is not None else
                     _int(env.get(ENV_PROCESS_ID), ENV_PROCESS_ID),
                     f"--process_id (or ${ENV_PROCESS_ID})"),
  }
  given = {k: v for k, (v, _) in values.items() if v is not None}
  if not given:
    return None
  missing = [name for k, (v, name) in values.items() if v is None]
  if missing:
    raise DistributedError(
        f"multi-process run needs all of --coordinator_address, --num_processes and "
        f"--process_id; missing {', '.join(missing)} (e.g. --coordinator_address="
        "10.0.0.2:8476 --num_processes=2 --process_id=0 on the first host).")
  spec = ProcessSpec(str(given["coordinator_address"]), int(given["num_processes"]),
                     int(given["process_id"]))
  if spec.num_processes < 1:
    raise DistributedError(f"--num_processes={spec.num_processes}: must be >= 1.")
  if not 0 <= spec.process_id < spec.num_processes:
    raise DistributedError(
        f"--process_id={spec.process_id} is not in [0, --num_processes="
        f"{spec.num_processes}): number the processes 0..{spec.num_processes - 1}.")
  if ":" not in spec.coordinator_address:
    raise DistributedError(
        f"--coordinator_address={spec.coordinator_address!r}: give host:port of process 0, "
        "e.g. 10.0.0.2:8476 (any free port, the same on every process).")
  return spec


def on_tpu_vm() -> bool:
  """True on a Cloud TPU VM (TPU chips on the PCI bus) or a multi-worker TPU env."""
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return True
  try:  # the check jax itself uses to decide it runs on a Cloud TPU VM.
    from jax._src import hardware_utils
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except  (private API moved: assume no TPU)
    return False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               environ: Mapping[str, str] | None = None) -> bool:
  """Joins jax's distributed runtime when the run has several processes; True if joined.

  Must run before anything touches jax devices. Explicit settings (flags or env) win;
  on a TPU VM the slice describes itself; otherwise this is a single-process run.
  """
  import jax
  spec = resolve(coordinator_address, num_processes, process_id, environ)
  if spec is not None:
    # CPU collectives across processes (no effect on TPU/GPU, whose runtimes have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info("jax.distributed: process %d of %d, coordinator %s", spec.process_id,
                 spec.num_processes, spec.coordinator_address)
    jax.distributed.initialize(spec.coordinator_address, spec.num_processes,
                               spec.process_id)
    return True
  if on_tpu_vm():
    jax.distributed.initialize()  # coordinator, count and id from the TPU metadata
    return True
  return False


def describe() -> str:
  """One line: this process, the process count, local and global devices."""
  import jax
  return (f"process {jax.process_index()} of {jax.process_count()}: "
          f"{jax.local_device_count()} local / {jax.device_count()} global "
          f"{jax.devices()[0].platform} devices")


def barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits until every process reaches `name`, through the coordination service.

  Not a device collective: CPU (gloo) collectives give up when a peer is more than 30 s
  late to the first one, which a host still compiling (or loaded) easily is; a barrier
  before the first step lines the hosts up. A no-op for a single process.
  """
  import jax
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # the client orbax's barriers use
  jax_distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)
