"""The build's decisions, tested without building: toolkit detection, compiler flags, install metadata."""
import ast
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("zico_fast_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs no setup(): that is guarded by __name__ == "__main__"
    return module


def make_toolkit(root: Path, nvcc=True, header=True, lib="lib64/libcudart.so.13"):
    for present, rel in ((nvcc, "bin/nvcc"), (header, "include/cuda_runtime.h"), (bool(lib), lib)):
        if present:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("")
    return root


def test_a_complete_toolkit_is_accepted(setup_py, tmp_path):
    assert setup_py.toolkit_problem(make_toolkit(tmp_path)) is None
    other = make_toolkit(tmp_path / "targets_layout", lib="targets/x86_64-linux/lib/libcudart.so")
    assert setup_py.toolkit_problem(other) is None


def test_a_wrapper_nvcc_folder_is_rejected(setup_py, tmp_path):
    # torch guesses CUDA_HOME=/usr/local when a wrapper /usr/local/bin/nvcc is on PATH.
    wrapper_only = make_toolkit(tmp_path, header=False, lib=None)
    assert "include/cuda_runtime.h" in setup_py.toolkit_problem(wrapper_only)
    no_runtime_lib = make_toolkit(tmp_path / "nolib", lib=None)
    assert "libcudart" in setup_py.toolkit_problem(no_runtime_lib)
    assert "bin/nvcc" in setup_py.toolkit_problem(tmp_path / "empty")


def test_find_toolkit_skips_bad_candidates_and_says_why(setup_py, tmp_path):
    good = make_toolkit(tmp_path / "cuda")
    wrapper = make_toolkit(tmp_path / "usr_local", header=False, lib=None)
    root, problems = setup_py.find_toolkit(env={"CUDA_HOME": str(wrapper)}, guessed=str(good))
    assert root == good and len(problems) == 1 and problems[0].startswith(f"CUDA_HOME={wrapper}")
    root, problems = setup_py.find_toolkit(env={}, guessed=str(wrapper))
    assert root is None and "guessed" in problems[0]
    with pytest.raises(RuntimeError, match="no usable CUDA toolkit.*cuda_runtime.h.*Set CUDA_HOME"):
        setup_py.want_cuda("cuda", "13.0", root, problems)
    assert setup_py.want_cuda("auto", "13.0", root, problems) is False
    with pytest.raises(RuntimeError, match="CPU build"):
        setup_py.want_cuda("cuda", None, good, [])


def test_building_without_torch_says_to_turn_off_build_isolation():
    # What pip's isolated build env looks like to setup.py: no torch importable.
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']; "
            "runpy.run_path('setup.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--no-build-isolation" in done.stderr and "Traceback" not in done.stderr


def test_extras_cover_every_optional_import(setup_py):
    extras = setup_py.EXTRAS
    assert {"plot", "validate", "ray", "all"} <= set(extras)
    assert set(extras["all"]) >= {"matplotlib", "scipy", "ray>=2.9"}
    # Every third-party module imported at module level is a declared dependency (core or extra).
    declared = {"numpy", "tqdm", "torch", "zico_fast"} | {re.split(r"[<>=\[]", dep)[0]
                                                          for deps in extras.values() for dep in deps}
    for path in (ROOT / "zico_fast").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in declared, f"{path.name} imports undeclared {name}"


def test_package_and_cli_import_without_optional_dependencies():
    # Installed with only install_requires, `import zico_fast` and the CLI must load: the optional
    # dependencies are checked when a command needs them, not at import.
    code = ("import sys\nfor name in ('scipy', 'matplotlib', 'ray'): sys.modules[name] = None\n"
            "import zico_fast, zico_fast.cli, zico_fast.search, zico_fast.correlate\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_fma_contraction_flag_in_both_builds(setup_py):
    assert "-ffp-contract=off" in setup_py.CXX_FLAGS
    assert "--fmad=false" in setup_py.NVCC_FLAGS
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "-ffp-contract=off" in cmake and "--fmad=false" in cmake


# add_sample from zico_math.h in the loop shape of the CPU kernel (csrc/cpu: an omp simd loop over
# float arrays, which GCC vectorises and, by default, fuses into vfmadd), against the same update
# with the product rounded on its own (volatile blocks contraction). Prints the bitwise mismatches.
FMA_PROBE = r"""
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>
#include "zico_math.h"
__attribute__((noinline)) void update(const float* __restrict__ g, const float* __restrict__ k,
    float* __restrict__ d, float* __restrict__ s, float* __restrict__ a, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    zico_fast::Moments m{d[i], s[i], a[i]};
    zico_fast::add_sample(m, g[i], k[i]);
    d[i] = m.sum_dev; s[i] = m.sum_sq_dev; a[i] = m.sum_abs;
  }
}
int main() {
  const int n = 100000;
  uint32_t state = 12345u;
  auto next = [&]() { state = state * 1664525u + 1013904223u; return (state >> 8) * (1.0f / 16777216.0f) - 0.5f; };
  std::vector<float> g(n), k(n), d(n), s(n), a(n), want(n);
  for (int i = 0; i < n; ++i) {
    g[i] = next(); k[i] = next(); d[i] = next(); s[i] = next() + 1.0f; a[i] = 0.0f;
    volatile float square = (g[i] - k[i]) * (g[i] - k[i]);
    want[i] = s[i] + square;
  }
  update(g.data(), k.data(), d.data(), s.data(), a.data(), n);
  int mismatches = 0;
  for (int i = 0; i < n; ++i) mismatches += std::memcmp(&s[i], &want[i], sizeof(float)) != 0;
  std::printf("%d\n", mismatches);
}
"""


def _fma_target_flags():
    if platform.machine() in ("x86_64", "AMD64"):
        with open("/proc/cpuinfo") as f:
            if " fma" not in f.read():
                pytest.skip("this CPU has no FMA instructions to run an x86-64-v3 binary")
        return ["-march=x86-64-v3"]
    if platform.machine() in ("aarch64", "arm64"):
        return []  # FMA is baseline on aarch64
    pytest.skip(f"no known FMA target flags for {platform.machine()}")


def _mismatches(tmp_path, flags):
    exe = tmp_path / f"probe{len(list(tmp_path.iterdir()))}"
    cmd = [os.environ.get("CXX", "g++"), "-std=gnu++20", *flags, f"-I{ROOT / 'csrc'}",
           *[f"-I{p}" for p in include_paths()], "-x", "c++", "-", "-o", str(exe)]
    subprocess.run(cmd, input=FMA_PROBE, text=True, check=True, capture_output=True, timeout=120)
    return int(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs a C++ compiler")
def test_cpu_moment_update_is_not_fused_into_fma(setup_py, tmp_path):
    target = _fma_target_flags()
    build_flags = list(setup_py.CXX_FLAGS)
    without = [f for f in build_flags if f != "-ffp-contract=off"]
    # The control shows the probe can see fusion: GCC's default contracts the update into an FMA.
    assert _mismatches(tmp_path, [*without, *target]) > 0
    assert _mismatches(tmp_path, [*build_flags, *target]) == 0
