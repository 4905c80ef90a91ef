"""SQuAD v1.1 / v2.0 fine-tuning (Devlin et al. 2018, sections 4.2-4.3; run_squad.py).

python -m bert_jax.squad --config=configs/squad.py --config.squad.version=2.0 \
    --config.init_checkpoint=PATH --workdir=runs/squad_v2

Windows of max_seq_length 384 with doc_stride 128, questions cut to 64 tokens, answers
up to 30 tokens, n-best 20; batch 32, lr 3e-5, 2 epochs, 10% linear warmup then linear
decay, dropout 0.1 (the original release's recipe; the paper used lr 5e-5 with batch 32
for 3 epochs on v1.1 and batch 48 for 2 epochs on v2.0). v2.0 predicts "" when
null score - best span score > τ (squad.null_score_diff_threshold); evaluation on dev also
reports the τ that maximises F1 / EM. Files default to ../shared/data/squad/v<version>/.
"""
from bert_jax import config as config_lib


def get_config():
  c = config_lib.default_config()
  c.task = "squad"
  config_lib.add_finetune_config(c)
  c.data.max_seq_length = 384
  c.train.batch_size = 32
  c.train.learning_rate = 3e-5
  c.finetune.num_epochs = 2.0
  c.finetune.eval_batch_size = 64
  c.finetune.sweep_learning_rates = (5e-5, 3e-5)
  c.squad = config_lib.squad_config()
  return c
