"""GLUE fine-tuning with the paper's recipe (Devlin et al. 2018, section 4.1 / A.3).

python -m bert_jax.glue --config=configs/glue.py --config.glue.task=mrpc \
    --config.init_checkpoint=PATH --workdir=runs/glue_mrpc

Batch 32, 3 epochs, lr 2e-5 (sweep: {5e-5, 4e-5, 3e-5, 2e-5}), 10% linear warmup then
linear decay, dropout 0.1, max_seq_length 128. The encoder size comes from the
checkpoint; config.model keeps only dropout/dtype/remat/attention settings.
"""
from bert_jax import config as config_lib


def get_config():
  c = config_lib.default_config()
  c.task = "glue"
  config_lib.add_finetune_config(c)
  c.glue = config_lib.glue_config()
  return c
