"""XLA_FLAGS for the tests: the user's flags (e.g. --xla_cpu_max_isa=AVX2) plus a fake
CPU device count, so a flag set for the whole suite also reaches every subprocess."""
import os
import re

_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\S+")
# The flags the suite was started with, before conftest adds its device count.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")


def xla_flags(devices: int, base: str | None = None) -> str:
  """`base` (default: the user's XLA_FLAGS) with the device count set to `devices`."""
  kept = _DEVICE_COUNT.sub("", USER_XLA_FLAGS if base is None else base).split()
  return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])
