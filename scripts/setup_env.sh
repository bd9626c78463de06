#!/usr/bin/env bash
# Creates ./.venv with the pinned CPU torch and the dev tools, and builds zico_fast into it.
# Idempotent: rerunning reuses the venv and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -r requirements-dev.txt
# The CUDA toolkit (NVTX headers; CUDA kernels too with a CUDA build of torch), if there is one.
CUDA_HOME="$(bash scripts/cuda_home.sh)"
if [[ -n "$CUDA_HOME" ]]; then export CUDA_HOME; else unset CUDA_HOME; fi
.venv/bin/python -m pip install -q --no-build-isolation -e .
.venv/bin/python -c "import zico_fast; print('zico_fast', zico_fast.__version__, 'built; CUDA kernels:', zico_fast.has_cuda_kernels())"
