"""GLUE fine-tuning with the paper's recipe (Devlin et al. 2018, section 4.1 / A.3).

python -m bert_jax.tasks.glue --config=configs/glue.py --config.glue.task=mrpc \
    --config.init_checkpoint=PATH --workdir=runs/glue_mrpc

Batch 32, 3 epochs, lr 2e-5 (sweep: {5e-5, 4e-5, 3e-5, 2e-5}), 10% linear warmup then
linear decay, dropout 0.1, max_seq_length 128. The encoder size comes from the
checkpoint; config.model keeps only dropout/dtype/remat/attention settings.
"""
import os

import ml_collections

from bert_jax import config as config_lib
from bert_jax import finetune


def get_config():
  c = config_lib.default_config()
  c.task = "glue"
  finetune.add_finetune_config(c)
  c.glue = ml_collections.ConfigDict()
  # cola | sst2 | mrpc | stsb | qqp | mnli | qnli | rte | wnli, a comma list, or "all".
  c.glue.task = "mrpc"
  # Folder with <TASK>/<split>.tsv as GLUE's download script writes it (TFDS: cache dir).
  c.glue.data_dir = os.path.join(os.path.dirname(config_lib.REPO_ROOT), "shared", "data",
                                 "glue")
  c.glue.source = "tsv"  # "tsv" (data_dir) | "tfds" (glue/<task>; needs tensorflow-datasets)
  # Where test predictions (CoLA.tsv, MNLI-m.tsv, ...) go; "" = workdir/submission.
  c.glue.output_dir = ""
  return c
