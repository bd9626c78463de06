#!/usr/bin/env bash
# All GPU work in one call of about 7 minutes (BUDGET_S, default 420 s) on a bare H100/H200 with
# its own python3, CUDA torch, nvcc, ncu and compute-sanitizer and no network, in the order of
# issue 28: probe, build, correctness tests (one step per file, the torch.compile test alone), the
# >2^31-element check, ncu, sanitizers, then timings one at a time: bandwidth, the kernel variants,
# end to end, candidates/s, workers per GPU, search overhead.
#   bash benchmarks/gpu_check.sh                     (device tool: `run`, timeout_s 480; $OUT comes back)
#   OUT=/abs/path bash benchmarks/gpu_check.sh       (elsewhere)
#   DRY_RUN=1 OUT=/tmp/x bash benchmarks/gpu_check.sh  (CPU: control flow only, every command printed)
# Every step runs under `timeout`, clipped to the budget; ncu and the sanitizers hold reserved slots,
# so overrunning steps before them cannot push them out; a step that no longer fits is SKIPPED and
# says so, as is a tool that is missing or refuses the device. After each step $OUT holds the two
# files the device tool brings back (at most 8 may): summary.txt and gpu_check_logs.tar.gz.
# Exit status: the number of FAILED or TIMEOUT steps.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/gpu_out}
DRY_RUN=${DRY_RUN:-0}
BUDGET_S=${BUDGET_S:-420}
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS"
rm -f "$OUT/summary.txt" "$OUT/gpu_check_logs.tar.gz"
: >"$LOGS/steps.txt"
source benchmarks/gpu_steps/runner.sh

# The plan: step limit / planned seconds (estimate), and the slots held until a step runs.
# Planned seconds are guesses until a GPU run replaces them, except the build: a whole CUDA build
# against the GPU machine's torch 2.11 took 46-62 s on 2 shared cores here (benchmarks/README.md),
# the .cu alone 37-44 s (nvcc 13.0, .ci/check_cuda_compiles.sh), so ~50 s with 16 cores.
RESERVE[big_tensor]=30 RESERVE[ncu]=90 RESERVE[ncu_report]=20 RESERVE[sanitizers]=60

# 1. Environment probe (runs in a dry run too: it only looks).
bash benchmarks/gpu_steps/probe.sh "$WORK/env.sh" >"$LOGS/machine.txt" 2>&1
source "$WORK/env.sh"
record probe ok "$(grep -c . "$LOGS/machine.txt") lines in machine.txt"
if [[ $DRY_RUN == 1 ]]; then  # the dry run takes every tool as present, to walk every step
  HAVE_NCU=1 HAVE_SANITIZER=1 HAVE_PYTEST_TIMEOUT=0 SANITIZER_FILTER_OPT=${SANITIZER_FILTER_OPT:---kernel-name}
fi
export CUDA_HOME TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0+PTX} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1

# 2. Build (editable install; fallback build_ext --inplace), then the variant builds in the
#    background: CPU work that overlaps the correctness steps and ends before any timing.
step build 150 50 bash benchmarks/gpu_steps/build.sh
if [[ $DRY_RUN == 0 ]] && ! grep -q -E '^build +ok' "$LOGS/steps.txt"; then
  record stop SKIPPED "every later step: the build failed (its log's tail is below)"
  cat "$OUT/summary.txt"
  exit "$failures"
fi
variant_pids=()
declare -A VARIANTS=([minblocks3]=ZICO_MIN_BLOCKS_PER_SM=3 [half_moments_l1]=ZICO_HALF_MOMENTS_L1)
for name in "${!VARIANTS[@]}"; do
  cmd=(nice timeout 240 env MAX_JOBS=4 "$PY" benchmarks/gpu_steps/build_variant.py
    --define "${VARIANTS[$name]}" --out "$WORK/variants/$name")
  if [[ $DRY_RUN == 1 ]]; then
    printf 'DRY RUN, would start in the background: %s\n' "$(printf '%q ' "${cmd[@]}")" >"$LOGS/variant_build_$name.log"
  else
    "${cmd[@]}" >"$LOGS/variant_build_$name.log" 2>&1 &
    variant_pids+=($!)
  fi
done

# 3. Correctness: one step per test file (its own limit), stack dumps of a test hung past 40 s,
#    pytest-timeout's per-test limit where the machine has it; the cold torch.compile test alone.
pytest_args=(-m pytest -v -p no:cacheprovider -rfEs -o faulthandler_timeout=40)
((HAVE_PYTEST_TIMEOUT)) && pytest_args+=(-p pytest_timeout --timeout=60)
compile_test=tests/test_cuda.py::test_reduce_overhead_compile_runs_around_the_ops
tests_step() {  # tests_step NAME LIMIT ESTIMATE PYTEST_ARGS...
  local name=$1 limit=$2 estimate=$3
  shift 3
  step "tests_$name" "$limit" "$estimate" "$PY" "${pytest_args[@]}" --junitxml="$LOGS/tests_$name.xml" "$@"
}
tests_step kernels 60 15 tests/test_kernels.py
tests_step cuda 90 30 tests/test_cuda.py --deselect "$compile_test"
tests_step builders 60 15 tests/test_fast_build.py tests/test_nb201_reuse.py::test_reused_network_on_cuda_has_the_cpu_bits
tests_step compile 90 40 "$compile_test"

# 4. Tensors past 2^31 elements, exact expected values (about 35 GB of GPU memory).
step big_tensor 60 15 "$PY" benchmarks/big_tensor_check.py --device cuda

# 5. Nsight Compute on the statistics kernels of a scoring run (by kernel name: ncu reads the '/'
#    of our NVTX ranges as nesting), with occupancy and launch statistics.
ncu_refused='ERR_NVGPUCTRPERM|LibraryNotLoaded|Failed to initialize|not supported on this|Profiling is not supported'
if ((HAVE_NCU)); then
  SKIP_IF=$ncu_refused step ncu 90 45 ncu --nvtx \
    --kernel-name regex:"accumulate_kernel|ratio_kernel|pair_ratio_kernel|sum_partials_kernel" \
    --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section LaunchStats --launch-count 8 -f -o "$LOGS/zico_kernels" \
    "$PY" benchmarks/profile.py --model resnet18-11M --device cuda --batches 8 --candidates 1
  if [[ $DRY_RUN == 1 || -f $LOGS/zico_kernels.ncu-rep ]]; then
    step ncu_report 20 5 bash -c 'ncu --import "$1" --page details >"$2"' _ "$LOGS/zico_kernels.ncu-rep" "$LOGS/ncu_details.txt"
  else
    skip ncu_report "no report: see ncu.log (ncu exits 0 when no kernel matched)"
  fi
else
  skip ncu "ncu not found on this machine"
  skip ncu_report "no ncu"
fi

# 6. Sanitizers, filtered to our kernels, on a case without cuDNN.
if ((HAVE_SANITIZER)); then
  step sanitizers 90 45 bash benchmarks/gpu_steps/sanitizers.sh "$LOGS" 75 "$SANITIZER_FILTER_OPT"
else
  skip sanitizers "compute-sanitizer not found on this machine"
fi

# 7-11. Timings, one at a time on an idle GPU: a variant build still running now is stopped.
for pid in ${variant_pids[@]+"${variant_pids[@]}"}; do
  kill "$pid" 2>/dev/null && echo "stopped (unfinished before the timings)" >>"$LOGS/variant_build_status.txt"
done
wait 2>/dev/null
step bandwidth 50 20 "$PY" -m pytest benchmarks/test_bandwidth.py --benchmark-only -q -p no:cacheprovider \
  -k cuda --benchmark-json="$LOGS/bandwidth.json"
step variants 60 30 "$PY" benchmarks/gpu_steps/variants.py default=auto \
  minblocks3="$WORK/variants/minblocks3/zico_fast_variant.so" \
  half_moments_l1="$WORK/variants/half_moments_l1/zico_fast_variant.so"
# The GPU goals' case: NB201 (1.5M), batch 128, N = 2, every scorer beside the bare passes.
end_to_end=()
for runner in bare zico_score zico_score_norestore reference authors; do
  end_to_end+=("benchmarks/test_end_to_end.py::test_end_to_end[cuda-nb201-1.5M-2-$runner]")
done
step end_to_end 50 25 "$PY" -m pytest "${end_to_end[@]}" --benchmark-only -q -p no:cacheprovider \
  --benchmark-json="$LOGS/end_to_end.json"
step candidates 40 15 "$PY" benchmarks/candidates_per_second.py --device cuda --candidates 16 \
  --out "$LOGS/candidates.json"
step workers 45 20 "$PY" benchmarks/worker_throughput.py --device cuda --workers 1,2,4 --candidates 24 \
  --rounds 1 --out "$LOGS/workers.json"
step search_overhead 40 15 "$PY" benchmarks/search_overhead.py --device cuda --rounds 6 --paper-rounds 6 \
  --search-iterations 80
# Both memory layouts on NB201 at 2 x 128 (cuDNN picks its algorithms by layout): decides --layout auto on GPUs.
step layout 40 20 "$PY" benchmarks/layout.py --device cuda --spaces nb201 --rounds 3

cat "$OUT/summary.txt"  # on stdout too: the tool's reply shows its tail even if no file comes back
rm -rf "$WORK"
exit "$failures"
