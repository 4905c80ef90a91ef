"""A 2-layer, H=128 BERT that pre-trains on a laptop CPU in minutes on the bundled corpus.

python -m bert_jax.main --config=configs/tiny.py --workdir=/tmp/bert_tiny
"""
import os

from bert_jax import config as config_lib

# The corpus bundled with the package (bert_jax/resources/README.md): two Gutenberg books +
# Google's sample text for training, 6 held-out chapters for evaluation.
_CORPUS = os.path.join(config_lib.BUNDLED_DIR, "corpus")


def get_config():
  c = config_lib.default_config()
  config_lib.size_overrides(c, "tiny")
  c.model.max_position_embeddings = 128
  # The bundled 8,000-token WordPiece vocabulary (config.vocab_file "" = bundled).
  c.model.vocab_size = 8000
  # Text files are paired in memory at start-up (seconds); big corpora use shards.
  c.data.train_files = os.path.join(_CORPUS, "train-*.txt")
  c.data.eval_files = os.path.join(_CORPUS, "eval-*.txt")
  c.data.max_seq_length = 64
  c.data.max_predictions_per_seq = 10
  # 600 steps of 32 sequences: about minutes on 2 CPU cores (measured: README, "Pre-training").
  c.train.batch_size = 32
  c.train.num_steps = 600
  # A small model takes a larger step than BERT-Base's 1e-4.
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 60
  # A progress line every 25 steps; eval on 5 held-out batches and a checkpoint every 200.
  c.train.log_every = 25
  c.train.eval_every = 200
  c.train.eval_steps = 5
  c.train.checkpoint_every = 200
  return c
