"""BERT-Large (L=24, H=1024, A=16; 340M) pre-training, paper phase 1.

The paper's recipe: batch 256, lr 1e-4, 10k warmup, 1M steps, seq 128 for the first 90%
of steps (this config), then seq 512 (configs/large_phase2.py).

python -m bert_jax.main --config=configs/large.py --workdir=gs://bucket/large \
    --config.data.train_files='gs://bucket/shards/*' --config.mesh.shape='(-1,1,1)'
"""
from bert_jax import config as config_lib


def get_config():
  c = config_lib.default_config()
  config_lib.size_overrides(c, "large")
  c.train.num_steps = 900_000
  c.model.remat = "dots"
  c.model.dtype = "bfloat16"
  return c
