"""Prints the model FLOPs per train step of the paper's configurations (bert_jax/flops.py).

python -m bert_jax.tools.flops
"""
from bert_jax import flops


def main():
  """Prints the FLOPs per step of the paper's configurations (the README table)."""
  from bert_jax import config as config_lib
  for name, size, batch, seq, preds in (("BERT-Base", "base", 256, 128, 20),
                                        ("BERT-Base", "base", 256, 512, 80),
                                        ("BERT-Large", "large", 256, 128, 20),
                                        ("BERT-Large", "large", 256, 512, 80)):
    m = config_lib.model_config(size)
    f = flops.pretrain_flops_per_step(m, batch, seq, preds)
    print(f"{name:10s} batch {batch} seq {seq} P {preds}: {f / 1e12:8.1f} TFLOPs/step, "
          f"{f / batch / 1e9:7.1f} GFLOPs/sequence")


if __name__ == "__main__":
  main()
