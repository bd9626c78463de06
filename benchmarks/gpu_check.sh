#!/usr/bin/env bash
# All GPU work in one call of at most 6 minutes on a bare H100/H200 (its own torch, nvcc, ncu and
# compute-sanitizer; no internet):
#   1. build against the machine's torch (sm_90 SASS + compute_90 PTX);
#   2. correctness, concurrently (no timings are taken meanwhile): the CUDA and kernel tests
#      (without -x, verbose, a stack dump of any test hung past 100 s), and compute-sanitizer memcheck
#      (caching allocator off), initcheck and synccheck on benchmarks/sanitizer_case.py, capped at
#      90 s each so a slow sanitizer costs its own verdict, never the timings after it;
#   3. timings, one at a time on the idle GPU: update bandwidth vs copy, end-to-end overhead on
#      NB201 at batch 128, candidates/s, workers per GPU, the search loop's overhead
#      (benchmarks/overhead.py is left out: it times the host alone, a CPU goal measured without a GPU);
#   4. Nsight Compute on the statistics kernels of a scoring run, chosen by kernel name (ncu reads
#      '/' in an NVTX filter as nesting, so our ranges' names, such as zico/statistics, cannot be
#      matched by it); --nvtx still records each kernel's ranges in the report.
# Every step has a time limit, clipped to what is left of BUDGET_S (default 340 s), so one hang
# cannot eat the call; a step that no longer fits is skipped and says so. $OUT (default ./gpu_out)
# ends up holding two files, because the device tool brings back at most 8 files from $OUT:
# summary.txt (machine, step verdicts, the figures) and gpu_check_logs.tar.gz (one log per step,
# steps.txt, benchmark JSON, the junit XML and the ncu report, staged in $OUT/logs until packed).
# Exit status: the number of failed steps.
#   bash benchmarks/gpu_check.sh              (device tool: it sets $OUT, whose files come back)
#   OUT=/abs/path bash benchmarks/gpu_check.sh (elsewhere)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
LOGS=$OUT/logs
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET_S:-340}))
: >"$LOGS/steps.txt"

step() {  # step NAME SECONDS COMMAND...: COMMAND under a time limit, output in $LOGS/NAME.log
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS - 15))  # 15 s stay for the summary
  if ((left < 20)); then
    echo "$name: SKIPPED (budget spent)" >>"$LOGS/steps.txt"
    return 0
  fi
  ((limit > left)) && limit=$left
  local start=$SECONDS
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  ((rc == 124 || rc == 137)) && verdict=TIMEOUT
  ((rc != 0 && rc != 124 && rc != 137)) && verdict=FAILED
  echo "$name: $verdict rc=$rc in $((SECONDS - start)) s (limit $limit s)" >>"$LOGS/steps.txt"
  return "$rc"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} >"$LOGS/machine.txt" 2>&1

export CUDA_HOME="${CUDA_HOME:-$(bash scripts/cuda_home.sh)}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0+PTX} MAX_JOBS=${MAX_JOBS:-16} ZICO_FAST_BUILD=cuda
echo "CUDA_HOME=$CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version 2>&1 | tail -n 1))" >>"$LOGS/machine.txt"

# 1. Build (measured: ~120 s on 2 busy CPU cores; one nvcc job dominates, so ~60-90 s here).
if step build 200 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . &&
  step import 30 "$PY" -c "import zico_fast; assert zico_fast.has_cuda_kernels(), 'no CUDA kernels in this build'"; then
  # 2. Correctness, concurrently.
  # With the caching allocator off every tensor is its own allocation, so memcheck sees overruns.
  sanitize=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --error-exitcode 1 --tool)
  step tests 120 "$PY" -m pytest tests/test_cuda.py tests/test_kernels.py tests/test_fast_build.py \
    tests/test_nb201_reuse.py::test_reused_network_on_cuda_has_the_cpu_bits -v -p no:cacheprovider -rfEs \
    -o faulthandler_timeout=100 --junitxml="$LOGS/tests.xml" &
  step sanitizer_memcheck 90 "${sanitize[@]}" memcheck "$PY" benchmarks/sanitizer_case.py &
  step sanitizer_initcheck 90 "${sanitize[@]}" initcheck "$PY" benchmarks/sanitizer_case.py &
  step sanitizer_synccheck 90 "${sanitize[@]}" synccheck "$PY" benchmarks/sanitizer_case.py &
  wait

  # 3. Timings, one at a time.
  step bandwidth 60 "$PY" -m pytest benchmarks/test_bandwidth.py --benchmark-only -q -p no:cacheprovider \
    -k cuda --benchmark-json="$LOGS/bandwidth.json"
  # The GPU goals' case: NB201 (1.5M), batch 128, N = 2, every scorer beside the bare passes.
  end_to_end=()
  for runner in bare zico_score zico_score_norestore reference authors; do
    end_to_end+=("benchmarks/test_end_to_end.py::test_end_to_end[cuda-nb201-1.5M-2-$runner]")
  done
  step end_to_end 60 "$PY" -m pytest "${end_to_end[@]}" --benchmark-only -q -p no:cacheprovider \
    --benchmark-json="$LOGS/end_to_end.json"
  step candidates 60 "$PY" benchmarks/candidates_per_second.py --device cuda --candidates 25 \
    --out "$LOGS/candidates.json"
  # Many candidates on one GPU: workers 1, 2, 4 side by side (and 1 worker without tasks sent ahead).
  step workers 50 "$PY" benchmarks/worker_throughput.py --device cuda --workers 1,2,4 --candidates 32 --rounds 1 \
    --out "$LOGS/workers.json"
  step search_overhead 45 "$PY" benchmarks/search_overhead.py --device cuda --rounds 10 --paper-rounds 10 \
    --search-iterations 120

  # 4. Nsight Compute: DRAM throughput of the fused kernels of a real run (-lineinfo is on).
  step ncu 75 ncu --nvtx --kernel-name regex:"accumulate_kernel|ratio_kernel|pair_ratio_kernel|sum_partials_kernel" \
    --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --launch-count 8 \
    -f -o "$LOGS/zico_kernels" "$PY" benchmarks/profile.py --model resnet18-11M --device cuda --batches 8 --candidates 1
  [[ -f "$LOGS/zico_kernels.ncu-rep" ]] && timeout 30 ncu --import "$LOGS/zico_kernels.ncu-rep" --page details \
    >"$LOGS/ncu_details.txt" 2>&1
fi

# Summary: step verdicts, then the figures each step printed.
{
  cat "$LOGS/machine.txt"
  echo
  cat "$LOGS/steps.txt"
  echo
  for name in build import; do  # a failed build stops everything: its error is what a rerun needs
    grep -q -E "^$name: (FAILED|TIMEOUT)" "$LOGS/steps.txt" && { echo "--- $name.log (tail)"; tail -n 25 "$LOGS/$name.log"; }
  done
  for name in tests sanitizer_memcheck sanitizer_initcheck sanitizer_synccheck; do
    [[ -f "$LOGS/$name.log" ]] && echo "$name: $(grep -E 'passed|failed|ERROR SUMMARY|mismatches' "$LOGS/$name.log" | tail -n 2 | tr '\n' ' ')"
  done
  grep -h -E '^FAILED|^ERROR ' "$LOGS/tests.log" 2>/dev/null | head -n 20
  for name in sanitizer_memcheck sanitizer_initcheck sanitizer_synccheck; do  # whose kernel: ours or a library's
    grep -m 6 -E '^========= +(Invalid|Uninitialized|Race|Barrier|Program hit|at .*(kernel|0x))' "$LOGS/$name.log" 2>/dev/null |
      sed "s/^/$name: /"
  done
  for name in bandwidth end_to_end; do
    [[ -f "$LOGS/$name.log" ]] && sed -n '/^ratios/,$p' "$LOGS/$name.log"
  done
  [[ -f "$LOGS/candidates.log" ]] && tail -n 6 "$LOGS/candidates.log"
  [[ -f "$LOGS/workers.log" ]] && tail -n 8 "$LOGS/workers.log"
  [[ -f "$LOGS/search_overhead.log" ]] && tail -n 8 "$LOGS/search_overhead.log"
  if [[ -f "$LOGS/ncu_details.txt" ]]; then
    grep -E '^  [A-Za-z_:<>0-9, ]+\(|DRAM Throughput|Memory Throughput|Duration' "$LOGS/ncu_details.txt" | head -n 40
  elif [[ -f "$LOGS/ncu.log" ]]; then  # ncu exits 0 when no kernel matched: say so, with its last words
    echo "ncu: no report"; tail -n 5 "$LOGS/ncu.log"
  fi
} >"$OUT/summary.txt" 2>&1
failed=$(grep -c -E ': (FAILED|TIMEOUT)' "$LOGS/steps.txt")
echo "failed or timed-out steps: $failed" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"  # on stdout too: the tool's reply shows its tail even if no file comes back
# Pack the staged files into one archive (the logs folder goes only once the archive is whole).
tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$LOGS" . && rm -rf "$LOGS"
exit "$failed"
