#!/usr/bin/env bash
# Sanitizer step of benchmarks/gpu_check.sh: compute-sanitizer memcheck, initcheck, racecheck and
# synccheck at once on benchmarks/sanitizer_case.py (no cuDNN), checking only our kernels (every
# zico_fast kernel's name holds "zico_fast") when this compute-sanitizer has a kernel filter.
# One verdict line per tool; exit 0 when none failed, 77 (skipped) when every tool refused the
# device, else 1.    bash benchmarks/gpu_steps/sanitizers.sh LOG_DIR SECONDS_EACH [FILTER_OPTION]
set -u
logs=$1 limit=$2 filter_opt=${3:-}
PY=${PYTHON:-python3}
# A refusal of the device or of its profiling interface, not a finding about our code.
refused='Device not supported|not supported on this (device|platform)|LibraryNotLoaded|Unable to (initialize|connect)|error 999'
filter=()
[[ -n $filter_opt ]] && filter=("$filter_opt" "kns=zico_fast")
tools=(memcheck initcheck racecheck synccheck)
for tool in "${tools[@]}"; do
  # The caching allocator off: every tensor is its own allocation, so overruns and reads of
  # never-written memory are visible to memcheck and initcheck.
  (PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 5 "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 \
    ${filter[@]+"${filter[@]}"} "$PY" benchmarks/sanitizer_case.py >"$logs/sanitizer_$tool.log" 2>&1
  echo $? >"$logs/sanitizer_$tool.rc") &
done
wait
failed=0 skipped=0
for tool in "${tools[@]}"; do
  rc=$(cat "$logs/sanitizer_$tool.rc")
  log=$logs/sanitizer_$tool.log
  if ((rc == 0)); then verdict="ok"
  elif ((rc == 124 || rc == 137)); then verdict="TIMEOUT after $limit s"; failed=$((failed + 1))
  elif grep -q -E "$refused" "$log"; then verdict="SKIPPED: refused: $(grep -m 1 -E "$refused" "$log" | cut -c 1-120)"; skipped=$((skipped + 1))
  else verdict="FAILED rc=$rc"; failed=$((failed + 1))
  fi
  echo "sanitizer_$tool: $verdict | $(grep -h -E 'ERROR SUMMARY|mismatches' "$log" | tr '\n' ' ')"
  grep -m 6 -E '^========= +(Invalid|Uninitialized|Race|Barrier|Program hit|at .*(kernel|0x))' "$log"
done
((failed > 0)) && exit 1
((skipped == ${#tools[@]})) && { echo "SKIPPED: every sanitizer refused this device"; exit 77; }
exit 0
