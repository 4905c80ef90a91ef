"""BERT-Large today: LAMB at batch 4k-32k on v4-32, v4-128 or v5e-256.

LAMB (You et al. 2019) trains BERT with batches of 32k-64k sequences. Learning rate and
warmup follow NVIDIA's LAMB BERT recipe (DeepLearningExamples, PyTorch BERT
run_pretraining.sh: phase 1 batch 65536, lr 6e-3, warmup 28.43%; phase 2 batch 32768,
lr 4e-3, warmup 12.8%), scaled by sqrt(batch / recipe batch) for other batches. The
number of steps keeps the paper's number of training sequences (256 x 900k in phase 1,
256 x 100k in phase 2), so wall-clock estimates compare with the paper's 4 days.

The config argument is `phase[,batch]`:
  JAX_PLATFORMS=cpu python -m bert_jax.aot --config=configs/pods/lamb_large.py:1,32768 --topology=v4:4x4x4
  JAX_PLATFORMS=cpu python -m bert_jax.aot --config=configs/pods/lamb_large.py:1,8192 --topology=v4:2x2x4
  JAX_PLATFORMS=cpu python -m bert_jax.aot --config=configs/pods/lamb_large.py:1,32768 --topology=v5e:16x16
"""
import math

from bert_jax import config as config_lib

_RECIPE = {"1": (65536, 6e-3, 0.2843, 256 * 900_000),
           "2": (32768, 4e-3, 0.128, 256 * 100_000)}


def get_config(arg: str = "1,32768"):
  phase, _, batch = arg.partition(",")
  batch = int(batch or 32768)
  c = config_lib.default_config()
  config_lib.size_overrides(c, "large")
  config_lib.paper_phase(c, phase)
  c.model.dtype = "bfloat16"
  c.model.scan_layers = False  # see configs/pods/paper_large_v2.py
  c.model.remat = "none"
  c.mesh.shape = (-1, 1, 1)
  recipe_batch, lr, warmup, sequences = _RECIPE[phase]
  c.train.optimizer = "lamb"
  c.train.batch_size = batch
  c.train.learning_rate = lr * math.sqrt(batch / recipe_batch)
  c.train.num_steps = math.ceil(sequences / batch)
  c.train.warmup_steps = int(warmup * c.train.num_steps)
  c.train.weight_decay = 0.01
  return c
