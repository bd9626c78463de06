# shellcheck shell=bash
# The step runner of benchmarks/gpu_check.sh (sourced): a time budget with slots reserved for
# chosen steps, one log per step, and after every step a fresh summary and log archive in $OUT.
#
# Expects OUT, LOGS (a staging folder outside $OUT: the device tool brings back at most 8 files),
# BUDGET_S and DRY_RUN (1: print each command instead of running it, and advance a simulated clock
# by the step's estimate, or by its limit with DRY_RUN_WORST=1, so the skip rules run as planned).

SUMMARY_S=15    # kept back for the last summary and archive
MIN_STEP_S=10   # a step with less left than this is skipped, not started
SKIP_RC=77      # a step command's exit status for "could not run here" (the reason on a SKIPPED: line)
declare -A RESERVE=()  # step name -> seconds held for it until it has run
dry_clock=0            # simulated seconds spent by stubbed steps (dry run only)
failures=0

elapsed() { echo $((SECONDS + dry_clock)); }

held_for_others() {  # seconds reserved for steps still to come, other than $1
  local name total=0
  for name in "${!RESERVE[@]}"; do
    [[ $name == "$1" ]] || total=$((total + RESERVE[$name]))
  done
  echo "$total"
}

# record NAME VERDICT DETAIL: one line in steps.txt, then the summary and archive in $OUT.
record() {
  printf '%-16s %-8s %s\n' "$1" "$2" "$3" >>"$LOGS/steps.txt"
  [[ $2 == FAILED || $2 == TIMEOUT ]] && failures=$((failures + 1))
  publish
}

# step NAME LIMIT ESTIMATE COMMAND...: COMMAND under `timeout`, output in $LOGS/NAME.log.
# The limit is clipped to what the budget leaves after the reserves of later steps; ESTIMATE is
# the planned duration (the dry run's clock). SKIP_IF (an ERE, set for one call) turns a failure
# whose log matches it (a tool that refuses the device) into SKIPPED with the matching line.
step() {
  local name=$1 limit=$2 estimate=$3
  shift 3
  unset "RESERVE[$name]"
  local left=$((BUDGET_S - $(elapsed) - SUMMARY_S - $(held_for_others "$name")))
  if ((left < MIN_STEP_S)); then
    record "$name" SKIPPED "budget: ${left} s left after the slots reserved for later steps"
    return 0
  fi
  ((limit > left)) && limit=$left
  local log=$LOGS/$name.log start=$SECONDS rc
  if [[ $DRY_RUN == 1 ]]; then
    printf 'DRY RUN, would run (limit %s s): %s\n' "$limit" "$(printf '%q ' "$@")" >"$log"
    local spent=$estimate
    [[ ${DRY_RUN_WORST:-0} == 1 || $estimate -gt $limit ]] && spent=$limit
    dry_clock=$((dry_clock + spent))
    record "$name" DRY "planned ${estimate} s, limit ${limit} s, simulated clock $(elapsed) s"
    return 0
  fi
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local took="rc=$rc in $((SECONDS - start)) s (limit $limit s)"
  if ((rc == 0)); then
    record "$name" ok "$took"
  elif ((rc == SKIP_RC)); then
    record "$name" SKIPPED "$(grep -m 1 -h '^SKIPPED' "$log" | cut -c 1-160)"
  elif ((rc == 124 || rc == 137)); then
    record "$name" TIMEOUT "$took"
  elif [[ -n ${SKIP_IF:-} ]] && grep -q -E "$SKIP_IF" "$log"; then
    record "$name" SKIPPED "tool refused here: $(grep -m 1 -h -E "$SKIP_IF" "$log" | cut -c 1-160)"
  else
    record "$name" FAILED "$took"
  fi
  return 0
}

skip() {  # skip NAME REASON: a step that cannot run here, listed with its reason
  unset "RESERVE[$1]"
  record "$1" SKIPPED "$2"
}

# The summary: a dry-run banner, the machine, every step's verdict, then each log's figures.
publish() {
  local tmp=$LOGS/../summary.tmp
  {
    if [[ $DRY_RUN == 1 ]]; then
      echo "=== DRY RUN: nothing ran on a GPU; this checks the script's control flow only, NOT a GPU result ==="
    fi
    cat "$LOGS/machine.txt" 2>/dev/null
    echo
    echo "budget ${BUDGET_S} s, clock $(elapsed) s, failed or timed-out steps: $failures"
    cat "$LOGS/steps.txt"
    echo
    figures
    [[ $DRY_RUN == 1 ]] && echo "=== DRY RUN: control flow only, NOT a GPU result ==="
  } >"$tmp" 2>&1
  mv -f "$tmp" "$OUT/summary.txt"
  tar -czf "$LOGS/../logs.tmp.tar.gz" -C "$LOGS" . 2>/dev/null && mv -f "$LOGS/../logs.tmp.tar.gz" "$OUT/gpu_check_logs.tar.gz"
}

# What each finished step printed that a reader needs without opening the archive.
figures() {
  local f
  for f in "$LOGS"/tests_*.log; do
    [[ -f $f ]] && echo "$(basename "$f" .log): $(grep -E '(passed|failed|error)' "$f" | tail -n 1)"
  done
  grep -h -E '^(FAILED|ERROR) ' "$LOGS"/tests_*.log 2>/dev/null | head -n 20
  grep -h -E '^(ok  |FAIL|SKIPPED|big tensor|device)' "$LOGS/big_tensor.log" 2>/dev/null
  grep -h -E '^sanitizer_|^=========.*(Invalid|Uninitialized|Race|Barrier|ERROR SUMMARY)' "$LOGS/sanitizers.log" 2>/dev/null | head -n 20
  grep -h -E '^  [A-Za-z_:<>0-9, ]+\(|DRAM Throughput|Memory Throughput|Duration|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Block Limit Registers|Waves Per SM' \
    "$LOGS/ncu_details.txt" 2>/dev/null | head -n 60
  grep -h -E 'registers|spill' "$LOGS"/variant_build_*.log 2>/dev/null | sort | uniq -c | head -n 30
  for f in bandwidth end_to_end; do
    [[ -f $LOGS/$f.log ]] && sed -n '/^ratios/,$p' "$LOGS/$f.log"
  done
  [[ -f $LOGS/variants.log ]] && grep -E '^(variant|ratio|case|SKIPPED)' "$LOGS/variants.log"
  for f in candidates workers search_overhead; do
    [[ -f $LOGS/$f.log ]] && { echo "--- $f (tail)"; tail -n 8 "$LOGS/$f.log"; }
  done
  for f in build import; do  # a failed build stops everything: its error is what a rerun needs
    grep -q -E "^$f +(FAILED|TIMEOUT)" "$LOGS/steps.txt" && { echo "--- $f.log (tail)"; tail -n 30 "$LOGS/$f.log"; }
  done
  return 0
}
