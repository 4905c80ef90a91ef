"""Launch bert_jax on Cloud TPU VMs and pod slices (`python -m launch.tpu --help`).

Run from the repository root: `configs/*.py` paths given to the launcher are the same
paths the workers use, since every worker gets a copy of this checkout.
"""
