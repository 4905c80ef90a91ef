"""BERT-Large pre-training, phase 2: seq 512, 80 predictions, the last 100k of 1M steps.

Starts from the phase-1 run (configs/large.py) with every parameter, heads included
(init_mode "full"; the optimizer state starts fresh, as the original's init_checkpoint
did). config.init_checkpoint is required: the phase-1 workdir, or one of its step dirs.

  python -m bert_jax.main --config=configs/large_phase2.py --workdir=gs://BUCKET/large_p2 \
      --config.init_checkpoint=gs://BUCKET/large --config.data.train_files='gs://BUCKET/shards512/*' \
      --config.vocab_file=gs://BUCKET/vocab.txt
"""
import os

from bert_jax import config as config_lib


def get_config():
  # configs/large.py with the paper's phase 2 (seq 512, P=80, 100k steps, init_mode full).
  c = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "large.py:2"))
  # Required: the phase-1 run to start from (a workdir or a step directory).
  c.init_checkpoint = config_lib.REQUIRED
  return c
