"""SQuAD v1.1 / v2.0 fine-tuning, prediction and evaluation (null-score threshold τ): the squad entry point.

python -m bert_jax.squad --config.squad.version=2.0 --config.init_checkpoint=PATH --workdir=runs/squad2

A thin front over `bert_jax.main` (same flags, start-up and one-line errors), with
--config defaulting to configs/squad.py; the task itself is bert_jax/tasks/squad.py.
"""
import os

from bert_jax import config as config_lib
from bert_jax import main

DEFAULT_CONFIG = os.path.join(config_lib.REPO_ROOT, "configs/squad.py")  # io: local-only (repo)

if __name__ == "__main__":
  main.start("bert_jax.squad", task="squad",
             default_config=DEFAULT_CONFIG)
