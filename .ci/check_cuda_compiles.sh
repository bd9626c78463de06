#!/usr/bin/env bash
# Compile-checks every csrc/**/*.cu with nvcc against the installed torch's headers (no GPU needed).
#
#   PYTHON      the python whose torch provides the headers (default: python)
#   CUDA_HOME   the CUDA toolkit root, holding bin/nvcc (default: the toolkit of the nvcc on PATH)
#   NVCC_EXTRA  more nvcc flags, split on spaces: e.g. "-DZICO_MIN_BLOCKS_PER_SM=3 -Xptxas=-v"
#               compiles a variant of NOTE: [Measured variants] and prints registers and spills
#
# Works with a CPU-only torch: the CUDA sources include only light c10/cuda headers, and
# C10_CUDA_NO_CMAKE_CONFIGURE_FILE stands in for the cuda_cmake_macros.h a CPU build lacks.
set -euo pipefail

die() {
  echo "check_cuda_compiles: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"

# Without CUDA_HOME, the toolkit of the real nvcc (the one on PATH may be a wrapper script).
CUDA_HOME="$(bash "$repo_root/scripts/cuda_home.sh")"
[[ -n "$CUDA_HOME" ]] || die "no CUDA toolkit found; set CUDA_HOME to the folder holding bin/nvcc"
[[ -x "$CUDA_HOME/bin/nvcc" && -f "$CUDA_HOME/include/cuda_runtime.h" ]] ||
  die "CUDA_HOME=$CUDA_HOME does not hold bin/nvcc and include/cuda_runtime.h;" \
    "set CUDA_HOME to the CUDA toolkit root (e.g. /usr/local/cuda-13.0)"
nvcc="$CUDA_HOME/bin/nvcc"

# The torch include dirs, plus the flags torch's CUDAExtension gives nvcc (no implicit half
# conversions, relaxed constexpr), so code that compiles here also compiles in the real build.
torch_flags="$("$PYTHON" -c '
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths
print("\n".join(["-I" + p for p in include_paths()] + COMMON_NVCC_FLAGS))
')" || die "$PYTHON could not import torch; set PYTHON to the interpreter of the project venv"
mapfile -t torch_args <<<"$torch_flags"
read -r -a extra_args <<<"${NVCC_EXTRA:-}"

mapfile -t sources < <(cd "$repo_root" && find csrc -name '*.cu' | sort)
((${#sources[@]} > 0)) || die "no .cu files under $repo_root/csrc"

out_dir="$(mktemp -d /tmp/check_cuda_compiles.XXXXXX)"
trap 'rm -rf "$out_dir"' EXIT

echo "nvcc: $nvcc ($("$nvcc" --version | tail -n 1))"
failed=0
for src in "${sources[@]}"; do
  echo "compiling $src"
  # Host functions called from device code are only warnings by default; here they fail.
  if ! "$nvcc" -c "$repo_root/$src" -o "$out_dir/${src//\//_}.o" \
      -std=c++20 -arch=sm_90 -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -DZICO_FAST_NVTX \
      -Werror cross-execution-space-call \
      "${torch_args[@]}" -I"$CUDA_HOME/include" ${extra_args[@]+"${extra_args[@]}"}; then
    echo "FAILED: $src" >&2
    failed=1
  fi
done
if ((failed)); then
  exit 1
fi
echo "all ${#sources[@]} CUDA source(s) compile"
