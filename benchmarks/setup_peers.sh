#!/usr/bin/env bash
# Installs the Flax peer (transformers<5 still has FlaxBertForPreTraining) into .peer/,
# apart from the installed transformers 5.x. Our own numpy/jax stay in charge.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q --target .peer "transformers>=4.57,<5"
rm -rf .peer/numpy .peer/numpy-* .peer/numpy.libs
