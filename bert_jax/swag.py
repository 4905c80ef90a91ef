"""SWAG-style multiple choice (SWAG, CommonsenseQA): the swag entry point.

python -m bert_jax.swag --config.init_checkpoint=PATH --workdir=runs/swag
python -m bert_jax.swag --config=configs/commonsense_qa.py --config.init_checkpoint=PATH --workdir=runs/csqa

A thin front over `bert_jax.main` (same flags, start-up and one-line errors), with
--config defaulting to configs/swag.py; the task itself is bert_jax/tasks/swag.py.
"""
import os

from bert_jax import config as config_lib
from bert_jax import main

DEFAULT_CONFIG = os.path.join(config_lib.REPO_ROOT, "configs/swag.py")  # io: local-only (repo)

if __name__ == "__main__":
  main.start("bert_jax.swag", task="swag",
             default_config=DEFAULT_CONFIG)
