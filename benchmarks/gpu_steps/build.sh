#!/usr/bin/env bash
# Build step of benchmarks/gpu_check.sh: the CUDA build of zico_fast against this machine's torch
# (offline: no index, no build isolation, no dependencies). If the editable install fails, the
# fallback `setup.py build_ext --inplace` puts zico_fast/_C*.so beside the sources, which the
# repository root's zico_fast then imports. Then checks that the CUDA kernels are in the build.
set -uo pipefail
PY=${PYTHON:-python3}
export ZICO_FAST_BUILD=cuda
echo "== pip install -e . (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} MAX_JOBS=${MAX_JOBS:-})"
start=$SECONDS
if ! "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .; then
  echo "== editable install failed after $((SECONDS - start)) s; fallback: setup.py build_ext --inplace"
  "$PY" setup.py build_ext --inplace || exit 1
fi
echo "== built in $((SECONDS - start)) s"
"$PY" -c "import zico_fast; assert zico_fast.has_cuda_kernels(), 'no CUDA kernels in this build'; print('CUDA kernels: yes')"
