"""The accelerators we know, in one table: TPU generations (HBM, peak bf16 FLOP/s, JAX
devices and TensorCores per chip, chips per host, slice naming) and GPU peaks.

Used for MFU (flops.py), the TPU compile report (tools/aot.py) and the launcher's slice
arithmetic (launch/slices.py). Source: the Google Cloud TPU system architecture pages of
each generation (checked 2025), NVIDIA's data sheets for the GPUs (dense bf16).
"""
from __future__ import annotations

import dataclasses

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
  """One TPU generation, per chip unless said otherwise."""
  hbm_bytes_per_chip: int
  peak_flops_per_chip: float  # dense bf16
  devices_per_chip: int  # JAX devices per chip: v2/v3 expose each TensorCore.
  cores_per_chip: int  # TensorCores: what v2-v5p accelerator-type sizes count.
  chip_config: str  # libtpu chip_config_name: "megacore" = one device for 2 cores.
  chips_per_host: int  # in a multi-host slice
  max_single_host_chips: int  # the largest slice on one host
  default_runtime: str  # Cloud TPU VM runtime version the launcher creates
  device_kind: str  # jax Device.device_kind prefix
  source: str

  @property
  def peak_flops_per_device(self) -> float:
    return self.peak_flops_per_chip / self.devices_per_chip


# The v5e/v5p/v6e pages say "GB"; they are GiB: libtpu's own limit for a v5e device is
# 15.75 GiB ("exceeds available HBM (15.75G)"), 16 GiB less what the runtime reserves.
TPU_GENERATIONS = {
    "v2": TpuGeneration(16 * GiB, 45e12, 2, 2, "default", 4, 4, "tpu-ubuntu2204-base",
                        "TPU v2", "https://cloud.google.com/tpu/docs/v2 (16 GiB HBM, 45 "
                        "TFLOP/s per chip, 2 TensorCores = 2 JAX devices of 8 GiB each)"),
    "v3": TpuGeneration(32 * GiB, 123e12, 2, 2, "default", 4, 4, "tpu-ubuntu2204-base",
                        "TPU v3", "https://cloud.google.com/tpu/docs/v3 (32 GiB HBM2, 123 "
                        "TFLOP/s per chip, 2 TensorCores = 2 JAX devices)"),
    "v4": TpuGeneration(32 * GiB, 275e12, 1, 2, "megacore", 4, 4, "tpu-ubuntu2204-base",
                        "TPU v4", "https://cloud.google.com/tpu/docs/v4 (32 GiB HBM2, 275 "
                        "TFLOP/s per chip; megacore: 1 JAX device per chip)"),
    "v5e": TpuGeneration(16 * GiB, 197e12, 1, 1, "default", 4, 8, "v2-alpha-tpuv5-lite",
                         "TPU v5 lite", "https://cloud.google.com/tpu/docs/v5e (16 GB HBM2, "
                         "197 TFLOP/s per chip)"),
    "v5p": TpuGeneration(95 * GiB, 459e12, 1, 2, "megacore", 4, 4, "v2-alpha-tpuv5",
                         "TPU v5", "https://cloud.google.com/tpu/docs/v5p (95 GB HBM2e, 459 "
                         "TFLOP/s per chip)"),
    "v6e": TpuGeneration(32 * GiB, 918e12, 1, 1, "default", 4, 8, "v2-alpha-tpuv6e",
                         "TPU v6 lite", "https://cloud.google.com/tpu/docs/v6e (32 GB HBM, "
                         "918 TFLOP/s per chip)"),
}
# Other spellings of a generation: Cloud's accelerator types say v5litepod, JAX's
# device_kind says "TPU v5e" on some runtimes.
TPU_ALIASES = {"v5litepod": "v5e"}

# Cloud accelerator-type names -> libtpu topology names (v2-v4, v5p count TensorCores,
# v5e/v6e count chips).
ACCELERATOR_TYPES = {
    "v2-32": "v2:4x4", "v2-128": "v2:8x8", "v2-512": "v2:16x16",
    "v3-32": "v3:4x4", "v3-128": "v3:8x8", "v3-1024": "v3:16x32",
    "v4-8": "v4:2x2x1", "v4-32": "v4:2x2x4", "v4-128": "v4:4x4x4", "v4-512": "v4:4x8x8",
    "v5p-128": "v5p:4x4x4", "v5e-256": "v5e:16x16", "v6e-256": "v6e:16x16",
}

GPU_PEAK_FLOPS = {  # dense bf16 per device
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}

# Dense peak FLOP/s per JAX device by device_kind prefix; a device not listed (e.g. a
# CPU) has no known peak and MFU is not reported for it.
PEAK_FLOPS = {
    **{g.device_kind: g.peak_flops_per_device for g in TPU_GENERATIONS.values()},
    "TPU v5e": TPU_GENERATIONS["v5e"].peak_flops_per_device,
    "TPU v6e": TPU_GENERATIONS["v6e"].peak_flops_per_device,
    "TPU v5p": TPU_GENERATIONS["v5p"].peak_flops_per_device,
    **GPU_PEAK_FLOPS,
}
