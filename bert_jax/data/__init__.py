"""Pre-training and fine-tuning data.

Pre-training follows Google's `create_pretraining_data.py`, split by concern:
  corpus.py                  raw text (plain / gzip, Project Gutenberg) -> documents of sentences
  instances.py               documents -> unmasked sentence pairs (NSP), shard record format
  create_pretraining_data.py the streaming, multi-process CLI that writes ArrayRecord shards
  masking.py                 dynamic masked-LM predictions, vectorised over a batch
  input_pipeline.py          shards or text -> masked, per-host, prefetched, resumable batches
Fine-tuning readers (GLUE, SQuAD, SWAG, ...) sit beside them, one module per task family.
"""


def make_pretraining_iterator(config, tokenizer, **kwargs):
  """See input_pipeline.make_pretraining_iterator (imported lazily: no cost for task readers)."""
  from bert_jax.data import input_pipeline
  return input_pipeline.make_pretraining_iterator(config, tokenizer, **kwargs)
