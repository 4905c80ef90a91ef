"""BERT-Base (L=12, H=768, A=12; 110M) pre-training, paper phase 1 (seq 128).

python -m bert_jax.main --config=configs/base.py --workdir=gs://bucket/base \
    --config.data.train_files='gs://bucket/shards/*'
"""
from bert_jax import config as config_lib


def get_config():
  return config_lib.default_config()
