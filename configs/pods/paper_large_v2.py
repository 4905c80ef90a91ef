"""BERT-Large as the paper trained it: 16 Cloud TPUs = 64 TPU v2 chips (`v2:8x8`), 4 days.

Devlin et al. 2018, A.2: batch 256 sequences, Adam lr 1e-4 with 10k warmup steps, 1M
steps; sequence length 128 for the first 90% of the steps (phase 1, P=20 predictions)
and 512 for the last 10% (phase 2, P=80). 64 v2 chips are 128 JAX devices (one per
TensorCore, 8 GiB HBM each), so data parallel gives 2 sequences per core.

Compile it for the pod we do not have (bert_jax/tools/aot.py, README "Pods"):
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/paper_large_v2.py --topology=v2:8x8
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/paper_large_v2.py:2 --topology=v2:8x8
Train with it: python -m bert_jax.main --config=configs/pods/paper_large_v2.py --workdir=gs://... \
  --config.data.train_files=gs://... --config.vocab_file=gs://.../vocab.txt
"""
from bert_jax import config as config_lib


def get_config(phase: str = "1"):
  c = config_lib.default_config()
  config_lib.size_overrides(c, "large")
  c.train.batch_size = 256
  c.model.dtype = "bfloat16"
  # Unrolled layers: XLA schedules across layers, and the compiler's cost model (which
  # counts a loop body once) prices the whole step.
  c.model.scan_layers = False
  # What the compiled step taught (README "Pods"): at 2 sequences per 8 GiB v2 core the
  # step fits without remat (5.6 of 8.0 GiB in phase 1 and 2), so nothing is recomputed,
  # and plain data parallelism fits the replicated parameters + Adam moments (3.8 GiB)
  # with no FSDP all-gathers. Batch 256 is the paper's: on a v4-128 (4 sequences per
  # chip) the compiler gives 18% MFU; for v4/v5e pods use configs/pods/lamb_large.py
  # (128 sequences per v4 chip per micro-batch: >= 51%).
  c.model.remat = "none"
  c.mesh.shape = (-1, 1, 1)  # data parallel over the 128 TensorCores
  return config_lib.paper_phase(c, phase)
