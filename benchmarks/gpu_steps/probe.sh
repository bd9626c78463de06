#!/usr/bin/env bash
# Environment probe of benchmarks/gpu_check.sh: says what this machine has (GPU, driver, nvcc, ncu,
# compute-sanitizer, the CUDA runtime library, Python.h, torch, pytest-timeout) and writes what
# later steps need as shell assignments to the file $1. Never fails: a missing tool is a finding.
#   bash benchmarks/gpu_steps/probe.sh ENV_FILE
set -u
env_file=$1
PY=${PYTHON:-python3}
found() { command -v "$1" >/dev/null 2>&1; }

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(uname -srm); cpus: $(nproc)"
if found nvidia-smi; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
else
  echo "nvidia-smi: not found"
fi
"$PY" - <<'PY' 2>&1
import sys, sysconfig, os
print("python", sys.version.split()[0], sys.executable)
include = sysconfig.get_paths()["include"]
print("Python.h:", "found in " + include if os.path.isfile(os.path.join(include, "Python.h")) else "MISSING under " + include)
try:
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU visible"
    print("torch", torch.__version__, "cuda", torch.version.cuda, "|", gpu)
except Exception as error:  # a broken torch is a finding, not a crash of the probe
    print("torch: cannot import:", error)
try:
    import pytest_timeout  # noqa: F401
    print("pytest-timeout: found")
except ImportError:
    print("pytest-timeout: not installed (per-file `timeout` and faulthandler dumps only)")
PY

cuda_home=${CUDA_HOME:-$(bash "$(dirname "$0")/../../scripts/cuda_home.sh")}
if [[ -n $cuda_home && -x $cuda_home/bin/nvcc ]]; then
  echo "CUDA_HOME=$cuda_home ($("$cuda_home/bin/nvcc" --version 2>&1 | tail -n 1))"
  cudart=$(ls "$cuda_home"/lib64/libcudart.so* "$cuda_home"/targets/*/lib/libcudart.so* 2>/dev/null | head -n 1)
  echo "libcudart: ${cudart:-MISSING under $cuda_home}"
else
  echo "nvcc: not found (CUDA_HOME='${cuda_home}')"
fi
for tool in ncu compute-sanitizer cuobjdump; do
  if found "$tool"; then echo "$tool: $(command -v "$tool") ($("$tool" --version 2>&1 | tail -n 1))"; else echo "$tool: not found"; fi
done

# compute-sanitizer names its kernel filter --kernel-name (recent) or --kernel-regex (older).
filter_opt=""
if found compute-sanitizer; then
  help=$(compute-sanitizer --help 2>&1)
  for opt in --kernel-name --kernel-regex; do
    grep -q -e "$opt " <<<"$help" && { filter_opt=$opt; break; }
  done
  echo "compute-sanitizer kernel filter option: ${filter_opt:-none found (sanitizers check every kernel)}"
fi
{
  echo "CUDA_HOME=$(printf '%q' "$cuda_home")"
  echo "HAVE_NCU=$(found ncu && echo 1 || echo 0)"
  echo "HAVE_SANITIZER=$(found compute-sanitizer && echo 1 || echo 0)"
  echo "SANITIZER_FILTER_OPT=$filter_opt"
  echo "HAVE_PYTEST_TIMEOUT=$("$PY" -c 'import pytest_timeout' >/dev/null 2>&1 && echo 1 || echo 0)"
} >"$env_file"
exit 0
