#!/usr/bin/env bash
# All GPU work in one call of under 8 minutes: build against the machine's torch, CUDA tests,
# compute-sanitizer on a small case, the GPU benchmarks, and ncu on the statistics kernels.
# Every step writes its log under $OUT (default ./gpu_out); a failing step is recorded and the
# script goes on, so one run brings back everything it could measure. Exit status: failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
failed=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, logs to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
  ((rc == 0)) || failed=$((failed + 1))
}

{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } >"$OUT/machine.txt" 2>&1
export CUDA_HOME="$(bash scripts/cuda_home.sh)" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16 ZICO_FAST_BUILD=cuda
step build 240 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
step tests 150 "$PY" -m pytest tests -q -x -p no:cacheprovider
# memcheck + racecheck on small kernel cases: every op, odd sizes, many tensors.
step sanitizer_memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 \
  "$PY" -m pytest tests/test_kernels.py -q -p no:cacheprovider -k cuda
step sanitizer_racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 1 \
  "$PY" -m pytest tests/test_kernels.py -q -p no:cacheprovider -k "cuda and match_oracle"
step benchmarks 240 "$PY" -m pytest benchmarks --benchmark-only -q -p no:cacheprovider -k cuda \
  --benchmark-json="$OUT/benchmarks.json"
# Achieved DRAM bandwidth of the fused kernels inside the statistics range of a real scoring run.
step ncu 90 ncu --nvtx --nvtx-include "zico/statistics/" --nvtx-include "zico/finalize/" --clock-control none \
  --section SpeedOfLight --section MemoryWorkloadAnalysis \
  "$PY" benchmarks/profile.py --model resnet18-11M --device cuda --batches 8 --candidates 1
echo "failed steps: $failed" | tee -a "$OUT/steps.txt"
exit "$failed"
