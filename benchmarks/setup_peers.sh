#!/usr/bin/env bash
# Installs the benchmarks' peers apart from our packages. The Flax peer (transformers<5
# still has FlaxBertForPreTraining) goes into .peer/, apart from the installed
# transformers 5.x; our own numpy/jax stay in charge.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q --target .peer "transformers>=4.57,<5"
rm -rf .peer/numpy .peer/numpy-* .peer/numpy.libs
# Google's create_pretraining_data.py as packaged on PyPI, for benchmarks/data_prep.py:
# the original (bert-tensorflow 1.0.4) and the TF2 Model Garden's (tf-models-official,
# which needs tf-keras); code only (--no-deps): they run on the installed TensorFlow.
pip install -q --no-deps --target .peer_prep bert-tensorflow==1.0.4 "tf-models-official==2.20.*" \
    "tf-keras==2.21.*"
