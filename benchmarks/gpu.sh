#!/usr/bin/env bash
# The GPU table: the pre-training step and the three fine-tuning steps in bfloat16 mixed
# precision, bert_jax vs HF Flax vs HF PyTorch, on one GPU (benchmarks/README.md, "GPU").
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# Needs jax with CUDA, flax, optax, orbax-checkpoint and torch with CUDA installed. The Flax
# peer needs transformers<5 in .peer/ (benchmarks/setup_peers.sh); on a machine without
# internet, wheels left in .whl/ (transformers 4.x, its huggingface_hub and tokenizers,
# ml-collections) are installed there instead. Writes versions.txt, the two JSONs and logs.
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -d .whl ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target .peer .whl/*.whl
fi
{
  "$py" -c 'import jax, flax, optax, torch; print("jax", jax.__version__, "flax", flax.__version__,
"optax", optax.__version__, "torch", torch.__version__); print(jax.devices())'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
} 2>&1 | tee "$out/versions.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # bert_jax from this checkout
status=0
timeout "${TRAIN_TIMEOUT:-240}" "$py" benchmarks/train_step.py --dtype=bfloat16 \
  --shapes="${SHAPES:-base128x64,base512x16}" --steps="${STEPS:-20}" \
  --json="$out/train_step_gpu.json" 2>&1 | tee "$out/train_step.log" || status=1
timeout "${FINETUNE_TIMEOUT:-240}" "$py" benchmarks/finetune_step.py --dtype=bfloat16 \
  --paper_batches --steps="${STEPS:-20}" --json="$out/finetune_step_gpu.json" 2>&1 \
  | tee "$out/finetune_step.log" || status=1
exit $status
