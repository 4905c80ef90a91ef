#!/usr/bin/env bash
# Thin wrapper: `launch/tpu.sh up --name=... --accelerator_type=v4-32 ...` from anywhere
# runs `python -m launch.tpu` from the repository root (see launch/tpu.py --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" -m launch.tpu "$@"
