"""bert_jax: BERT (Devlin et al. 2018) in JAX/Flax, sharded for TPU pods."""
__version__ = "0.1.0"
