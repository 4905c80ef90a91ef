"""BERT-Base (L=12, H=768, A=12; 110M) pre-training with the paper's recipe.

Devlin et al. 2018, A.2: batch 256 sequences, Adam with weight decay 0.01 (the original's
AdamWeightDecayOptimizer: no bias correction, eps 1e-6), lr 1e-4 with 10k warmup steps
and linear decay, 1M steps: sequence length 128 with 20 predictions for the first 90%
(phase 1, this config or `configs/base.py:1`), then 512 with 80 predictions for the last
10% (phase 2, `configs/base.py:2`), started from the phase-1 run.

  python -m bert_jax.main --config=configs/base.py --workdir=gs://BUCKET/base \
      --config.data.train_files='gs://BUCKET/shards128/*' --config.vocab_file=gs://BUCKET/vocab.txt
  python -m bert_jax.main --config=configs/base.py:2 --workdir=gs://BUCKET/base_p2 \
      --config.init_checkpoint=gs://BUCKET/base --config.data.train_files='gs://BUCKET/shards512/*' \
      --config.vocab_file=gs://BUCKET/vocab.txt

The vocabulary the shards were made with is required (config.vocab_file).
"""
from bert_jax import config as config_lib


def get_config(phase: str = "1"):
  c = config_lib.default_config()  # BERT-Base, batch 256, lr 1e-4, 10k warmup
  # The original optimizer, for a faithful reproduction ("adamw" adds bias correction).
  c.train.optimizer = "bert_adam"
  # Phase 1: 900k steps at seq 128 (P=20); phase 2: 100k steps at seq 512 (P=80),
  # init_mode "full" from the phase-1 run.
  config_lib.paper_phase(c, phase)
  if phase == "2":
    # Required in phase 2: the phase-1 run to start from (a workdir or a step directory).
    c.init_checkpoint = config_lib.REQUIRED
  return c
