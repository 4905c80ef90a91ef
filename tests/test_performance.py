"""Structural performance checks of the BERT-Base train step (not timed).

The step must (a) evaluate the MLM vocabulary projection only at the masked positions —
a [batch, max_predictions, vocab] logits tensor, never [batch, seq, vocab] — and (b) stay
on the device: no host callbacks, infeed/outfeed or send/recv in the compiled program.
"""
import re

import jax
import numpy as np
import pytest

from bert_jax import config as config_lib

from bert_jax import optim, partitioning, train_lib
from bert_jax.tasks import pretrain

BATCH, SEQ, PREDS, VOCAB = 8, 128, 20, 30522


@pytest.fixture(scope="module")
def base_step_text():
  c = config_lib.default_config()  # BERT-Base
  c.data.max_seq_length, c.data.max_predictions_per_seq = SEQ, PREDS
  c.train.batch_size = BATCH
  c.mesh.shape = (1, 1, 1)
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  model = pretrain.make_model(c)
  tx = optim.make_optimizer(c.train)
  state, shardings = train_lib.abstract_train_state(pretrain.make_init_fn(model, c), tx, mesh)
  step = train_lib.make_train_step(pretrain.make_compute_loss(model), pretrain.denominators, tx,
                                   mesh, shardings)
  i32 = lambda *s: jax.ShapeDtypeStruct(s, np.int32)
  batch = {
      "input_ids": i32(BATCH, SEQ), "attention_mask": i32(BATCH, SEQ),
      "token_type_ids": i32(BATCH, SEQ), "masked_lm_positions": i32(BATCH, PREDS),
      "masked_lm_ids": i32(BATCH, PREDS),
      "masked_lm_weights": jax.ShapeDtypeStruct((BATCH, PREDS), np.float32),
      "next_sentence_labels": i32(BATCH),
  }
  with partitioning.activate(mesh):
    lowered = step.jitted.lower(state, batch)
    compiled = lowered.compile()
  return lowered.as_text(), compiled.as_text()


def test_mlm_logits_only_at_masked_positions(base_step_text):
  stablehlo, _ = base_step_text
  assert f"tensor<{BATCH}x{PREDS}x{VOCAB}xf32>" in stablehlo
  assert f"{BATCH}x{SEQ}x{VOCAB}x" not in stablehlo


def test_no_host_round_trip(base_step_text):
  stablehlo, hlo = base_step_text
  for pattern in (r"\binfeed\b", r"\boutfeed\b", r"\bsend\(", r"\brecv\(",
                  r"callback", r"host_compute"):
    assert not re.search(pattern, hlo), pattern
    assert not re.search(pattern, stablehlo), pattern
