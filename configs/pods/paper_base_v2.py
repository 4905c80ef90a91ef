"""BERT-Base as the paper trained it: 4 Cloud TPUs = 16 TPU v2 chips (`v2:4x4`), 4 days.

Same recipe as BERT-Large (configs/pods/paper_large_v2.py): batch 256, 1M steps, seq 128
for 90% then 512. 16 v2 chips are 32 JAX devices (TensorCores): 8 sequences per core.

  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/paper_base_v2.py --topology=v2:4x4
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/paper_base_v2.py:2 --topology=v2:4x4
"""
from bert_jax import config as config_lib


def get_config(phase: str = "1"):
  c = config_lib.default_config()  # BERT-Base
  c.train.batch_size = 256
  c.model.dtype = "bfloat16"
  c.model.scan_layers = False
  c.model.remat = "none"
  c.mesh.shape = (-1, 1, 1)
  return config_lib.paper_phase(c, phase)
