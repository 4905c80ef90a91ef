"""Model FLOPs of the MLM + NSP train step, and accelerator peaks, for MFU.

MFU = model FLOPs per step / (step time * number of devices * peak FLOP/s per device).
Model FLOPs count the matmuls the model needs (the PaLM / Megatron convention):
rematerialisation, elementwise work and the optimizer update are not counted, so MFU
does not reward recomputation. For one global batch of B sequences of length S with P
masked positions each, hidden H, intermediate I, L layers and vocabulary V:

  per token, per layer (forward):   2 * (4*H*H + 2*H*I)    QKV, attention output, FFN
                                  + 2 * 2 * S * H          scores Q.K^T and probs.V
  per masked position (forward):    2 * (H*H + H*V)        MLM transform and tied decoder
  per sequence (forward):           2 * (H*H + 2*H)        pooler and NSP classifier
  train step = 3 * forward          (backward = 2 * forward: input and weight gradients)

  FLOPs/step = 3 * B * [ S*L*(8*H*H + 4*H*I + 4*S*H) + P*(2*H*H + 2*H*V) + 2*H*H + 4*H ]

The MLM head runs only at the P masked positions (as in the original), not at all S
tokens: for BERT-Base at S=128, P=20 that is 18% fewer FLOPs per step.
`tests/test_train.py` checks this against XLA's cost_analysis() of the compiled step.
"""
from __future__ import annotations

from bert_jax import hardware

# Peak FLOP/s per device kind: the one accelerator table is hardware.py.
PEAK_FLOPS = hardware.PEAK_FLOPS


def encoder_flops_per_token(hidden: int, intermediate: int, num_layers: int,
                            seq_len: int) -> float:
  """Forward FLOPs of the encoder for one token (matmuls and attention)."""
  h, i = hidden, intermediate
  return num_layers * (2 * (4 * h * h + 2 * h * i) + 4 * seq_len * h)


def pretrain_flops_per_step(model_cfg, batch_size: int, seq_len: int,
                            num_predictions: int) -> float:
  """Model FLOPs of one MLM + NSP train step on a global batch (see module docstring).

  Args:
    model_cfg: `config.model` (or a BertConfig): hidden_size, intermediate_size,
      num_layers, vocab_size.
    batch_size: global batch (sequences per optimizer step, all micro-batches).
    seq_len: padded sequence length S.
    num_predictions: masked positions per sequence P (max_predictions_per_seq).
  """
  h, v = model_cfg.hidden_size, model_cfg.vocab_size
  per_seq = seq_len * encoder_flops_per_token(h, model_cfg.intermediate_size,
                                              model_cfg.num_layers, seq_len)
  per_seq += num_predictions * 2 * (h * h + h * v)  # MLM head at masked positions only
  per_seq += 2 * (h * h + 2 * h)  # pooler + NSP
  return 3.0 * batch_size * per_seq


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
  """Peak FLOP/s of one device: `override` if > 0, else from PEAK_FLOPS, else None."""
  if override and override > 0:
    return float(override)
  for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return PEAK_FLOPS[prefix]
  return None
