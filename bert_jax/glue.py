"""GLUE fine-tuning (all 9 tasks, their official metrics, submission files): the glue entry point.

python -m bert_jax.glue --config.glue.task=mrpc --config.init_checkpoint=PATH --workdir=runs/mrpc
python -m bert_jax.glue --summarize=runs/mrpc,runs/rte   # the GLUE table over finished runs

A thin front over `bert_jax.main` (same flags, start-up and one-line errors), with
--config defaulting to configs/glue.py; the task itself is bert_jax/tasks/glue.py.
"""
import os

from bert_jax import config as config_lib
from bert_jax import main

DEFAULT_CONFIG = os.path.join(config_lib.REPO_ROOT, "configs/glue.py")  # io: local-only (repo)

if __name__ == "__main__":
  main.start("bert_jax.glue", task="glue",
             default_config=DEFAULT_CONFIG, summarize=True)
