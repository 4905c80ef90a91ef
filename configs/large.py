"""BERT-Large (L=24, H=1024, A=16; 340M) pre-training with the paper's recipe, phase 1.

Devlin et al. 2018, A.2: batch 256 sequences, Adam with weight decay 0.01 (no bias
correction, eps 1e-6), lr 1e-4 with 10k warmup steps and linear decay, 1M steps: seq 128
with 20 predictions for the first 90% (this config), then seq 512 with 80 predictions for
the last 10% (configs/large_phase2.py), started from this run's last checkpoint.

  python -m bert_jax.main --config=configs/large.py --workdir=gs://BUCKET/large \
      --config.data.train_files='gs://BUCKET/shards128/*' --config.vocab_file=gs://BUCKET/vocab.txt
  python -m bert_jax.main --config=configs/large_phase2.py --workdir=gs://BUCKET/large_p2 \
      --config.init_checkpoint=gs://BUCKET/large --config.data.train_files='gs://BUCKET/shards512/*' \
      --config.vocab_file=gs://BUCKET/vocab.txt
"""
from bert_jax import config as config_lib


def get_config(phase: str = "1"):
  c = config_lib.default_config()
  config_lib.size_overrides(c, "large")
  # The original optimizer, for a faithful reproduction ("lamb" for batches of 4k+).
  c.train.optimizer = "bert_adam"
  # bfloat16 matmuls; params, optimizer state, softmax and LayerNorm stay float32.
  c.model.dtype = "bfloat16"
  # Keep only matmul outputs for the backward pass: seq 512 fits 16 GiB HBM per chip.
  c.model.remat = "dots"
  # Phase 1: 900k steps at seq 128 (P=20); phase 2: see configs/large_phase2.py.
  return config_lib.paper_phase(c, phase)
