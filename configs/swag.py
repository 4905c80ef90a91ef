"""Fine-tune BERT on SWAG (4-way multiple choice) with the paper's recipe.

python -m bert_jax.swag --config=configs/swag.py \
    --config.init_checkpoint=PATH/TO/BERT --workdir=runs/swag \
    --config.swag.train_file=swagaf/data/train.csv \
    --config.swag.dev_file=swagaf/data/val.csv --config.swag.test_file=swagaf/data/test.csv

(also `python -m bert_jax.main --config=configs/swag.py ...`). Devlin et al. 2018,
section 4.4: batch 16, learning rate 2e-5, 3 epochs (bert_jax.config.swag_config).
Each example is 4 sequences [CLS] sent1 [SEP] sent2 ending_i [SEP] scored on the pooled
output, softmax over the 4. Accuracy on val; test predictions go to
workdir/submission/test_predictions.csv. TFDS/HF JSON lines work too (by file name).
"""
from bert_jax import config as config_lib


def get_config():
  c = config_lib.swag_config("swag", num_choices=4)
  # Official SWAG rows are at most ~90 WordPieces: 128 truncates none.
  c.data.max_seq_length = 128
  return c
