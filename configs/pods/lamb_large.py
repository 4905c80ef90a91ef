"""BERT-Large today: LAMB at batch 4k-32k on v4-32, v4-128 or v5e-256.

LAMB (You et al. 2019) trains BERT with batches of 32k-64k sequences. Learning rate and
warmup follow NVIDIA's LAMB BERT recipe (DeepLearningExamples, PyTorch BERT
run_pretraining.sh: phase 1 batch 65536, lr 6e-3, warmup 28.43%; phase 2 batch 32768,
lr 4e-3, warmup 12.8%), scaled by sqrt(batch / recipe batch) for other batches. The
number of steps keeps the paper's number of training sequences (256 x 900k in phase 1,
256 x 100k in phase 2), so wall-clock estimates compare with the paper's 4 days.

The config argument is `phase[,batch[,grad_accum_steps]]`:
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/lamb_large.py:1,32768 --topology=v4:4x4x4
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/lamb_large.py:1,8192 --topology=v4:2x2x4
  JAX_PLATFORMS=cpu python -m bert_jax.tools.aot --config=configs/pods/lamb_large.py:1,32768,2 --topology=v5e:16x16

What the compiled step taught (README "Pods", benchmarks/pods.py), phase 1 (seq 128):
  * Activations, not state, fill HBM: without remat or accumulation, 512 sequences per
    v4 chip (32k on v4-128, 8k on v4-32) needed 62.8 GiB of 32, and 128 per v5e chip
    17.5 of 15.75 GiB; parameters and LAMB moments are only 3.8 GiB per device.
  * Gradient accumulation, not remat, makes them fit: 4 micro-batches of 128 sequences
    per v4 chip peak at 21.5 of 32 GiB, and every FLOP is still useful work (MFU >= 51%
    on v4-128 by the compiler). Full remat is the other way to 512 per chip (not
    compiled here) but recomputes the forward pass (+1/3 FLOPs, so MFU at most ~3/4 of
    the hardware's utilisation); "dots" keeps every matmul output, by arithmetic ~55 MiB
    per sequence over 24 layers in bf16, too much at 512 per chip.
    v5e chips have half the HBM: 2 micro-batches of 64 (the third config argument).
  * Plain data parallelism (mesh (-1, 1, 1)) suffices: the replicated state fits with
    room to spare, and FSDP would add parameter all-gathers to every micro-batch for
    memory we do not need. The gradient all-reduces stay in bf16, as the compiler
    emits them (696 MiB bf16 + 9 MiB f32 per device in the v4-128 step's HLO).
  * bf16 activations and matmuls (model.dtype), f32 parameters and LAMB moments.
"""
import math

from bert_jax import config as config_lib

_RECIPE = {"1": (65536, 6e-3, 0.2843, 256 * 900_000),
           "2": (32768, 4e-3, 0.128, 256 * 100_000)}


def get_config(arg: str = "1,32768"):
  phase, _, rest = arg.partition(",")
  batch, _, accum = rest.partition(",")
  batch = int(batch or 32768)
  c = config_lib.default_config()
  config_lib.size_overrides(c, "large")
  config_lib.paper_phase(c, phase)
  c.model.dtype = "bfloat16"
  c.model.scan_layers = False  # see configs/pods/paper_large_v2.py
  c.model.remat = "none"  # accumulation instead (above)
  c.mesh.shape = (-1, 1, 1)
  # 4 micro-batches: 128 sequences per chip at 32k on v4-128 or 8k on v4-32.
  c.train.grad_accum_steps = int(accum or 4)
  recipe_batch, lr, warmup, sequences = _RECIPE[phase]
  c.train.optimizer = "lamb"
  c.train.batch_size = batch
  c.train.learning_rate = lr * math.sqrt(batch / recipe_batch)
  c.train.num_steps = math.ceil(sequences / batch)
  c.train.warmup_steps = int(warmup * c.train.num_steps)
  c.train.weight_decay = 0.01
  return c
