#!/usr/bin/env bash
# Prints the CUDA toolkit root (the folder holding bin/nvcc), or nothing when there is no toolkit.
# CUDA_HOME wins when set; otherwise nvcc's own dry run names the folder of the real binary,
# because the nvcc on PATH may be a wrapper script whose folder is not the toolkit.
if [[ -n "${CUDA_HOME:-}" ]]; then
  echo "$CUDA_HOME"
elif command -v nvcc >/dev/null 2>&1; then
  bin="$(nvcc -dryrun -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n 1)"
  [[ -n "$bin" ]] && (cd "$bin/.." && pwd)
fi
