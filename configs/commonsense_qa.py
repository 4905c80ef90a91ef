"""Fine-tune BERT on CommonsenseQA (5-way multiple choice) through the SWAG task.

python -m bert_jax.swag --config=configs/commonsense_qa.py \
    --config.init_checkpoint=PATH/TO/BERT --workdir=runs/csqa

By default it trains on the first 1,000 of the 1,221 public dev questions
(../shared/data/mc/commonsense_qa/validation.jsonl, Hugging Face layout) and evaluates
on the other 221: the split of the README's result and of benchmarks/commonsense_qa.py.
For the full task point train_file/dev_file at the official train/dev files and clear
the slices. Recipe as configs/swag.py (batch 16, lr 2e-5, 3 epochs).
"""
import os

from bert_jax import config as config_lib

CSQA_FILE = os.path.join(os.path.dirname(config_lib.REPO_ROOT), "shared", "data", "mc",
                         "commonsense_qa", "validation.jsonl")


def get_config():
  c = config_lib.swag_config("commonsense_qa", num_choices=5)
  c.swag.train_file = CSQA_FILE
  c.swag.dev_file = CSQA_FILE
  c.swag.train_slice = ":1000"
  c.swag.dev_slice = "1000:"
  # The longest question + choice is 68 WordPieces: 80 truncates nothing.
  c.data.max_seq_length = 80
  return c
