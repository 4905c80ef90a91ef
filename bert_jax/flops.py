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

# Dense peak FLOP/s per device (bfloat16 matmul) by jax device_kind prefix; a device not
# listed (e.g. a CPU) has no known peak and MFU is not reported for it.
PEAK_FLOPS = {
    "TPU v2": 45e12 / 2,  # per core: a v2 chip (2 cores) is 45 TFLOP/s.
    "TPU v3": 123e12 / 2,  # per core (jax device): a v3 chip has 2.
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


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


def main():
  """Prints the FLOPs per step of the paper's configurations (the README table)."""
  from bert_jax import config as config_lib
  for name, size, batch, seq, preds in (("BERT-Base", "base", 256, 128, 20),
                                        ("BERT-Base", "base", 256, 512, 80),
                                        ("BERT-Large", "large", 256, 128, 20),
                                        ("BERT-Large", "large", 256, 512, 80)):
    m = config_lib.model_config(size)
    f = pretrain_flops_per_step(m, batch, seq, preds)
    print(f"{name:10s} batch {batch} seq {seq} P {preds}: {f / 1e12:8.1f} TFLOPs/step, "
          f"{f / batch / 1e9:7.1f} GFLOPs/sequence")


if __name__ == "__main__":
  main()
