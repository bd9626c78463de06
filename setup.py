"""Builds zico_fast and its one extension, zico_fast._C (CPU kernels always, CUDA kernels when possible).

Build with `pip install --no-build-isolation -e .` against the torch you run with.

Environment:
  ZICO_FAST_BUILD=auto|cpu|cuda  auto (default) builds CUDA kernels when torch has CUDA and a
                                 toolkit is found; cpu never does; cuda fails loudly if it cannot.
  CUDA_HOME                      the CUDA toolkit root (the folder holding bin/nvcc,
                                 include/cuda_runtime.h and lib64/libcudart.so).
  TORCH_CUDA_ARCH_LIST           GPU architectures to compile for, e.g. "9.0+PTX".
"""
import os
from pathlib import Path

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pip's isolated build env has no torch (and must not get one: ABI mismatch)
    raise SystemExit(
        "zico_fast builds against the torch you run with, but this build environment has no torch: "
        "install torch first, then run  pip install --no-build-isolation .  (or -e .)"
    ) from None

ROOT = Path(__file__).parent
CSRC = Path("csrc")

# -g0 overrides the -g in Python's CFLAGS (debug info triples the compile time of torch headers).
# -ffp-contract=off: GCC's default (fast) fuses `s += d * d` into an FMA wherever the target has one
# (-march=x86-64-v3, aarch64), which rounds once instead of twice and breaks the bit-for-bit
# agreement with the CUDA kernels (which round twice on purpose, see csrc/zico_math.h).
CXX_FLAGS = ["-O3", "-fopenmp", "-g0", "-ffp-contract=off"]  # the C++ standard comes from torch
# No --use_fast_math: it flushes denormals, and tiny squared deviations must underflow exactly as
# numpy's do (NOTE: [Dropped elements] in csrc/zico_math.h). --fmad=false keeps nvcc from fusing
# any float multiply-add the explicit __fmul_rn/__fadd_rn in zico_math.h do not already pin.
NVCC_FLAGS = ["-O3", "-lineinfo", "--fmad=false"]

EXTRAS = {
    "plot": ["matplotlib"],                # search/correlate plots
    "validate": ["scipy", "matplotlib"],   # correlate: rank correlations and plots
    "test": ["pytest", "pytest-benchmark", "scipy"],
    "ray": ["ray>=2.9"],                   # --backend ray: scoring actors on a Ray cluster
    "optuna": ["optuna>=3"],               # examples/optuna_nb201.py: an Optuna study scored by zico_fast.Scorer
}
EXTRAS["all"] = sorted({dep for name, deps in EXTRAS.items() if name != "test" for dep in deps})


def toolkit_problem(root):
    """Why `root` is not a CUDA toolkit we can build with, or None when it is.

    A real toolkit root holds the compiler, the runtime headers and the runtime library. A folder
    like /usr/local with only a wrapper bin/nvcc passes a bare nvcc check, then fails at link time
    (`cannot find -lcudart`) after minutes of compiling, so all three are required up front.
    """
    root = Path(root)
    if not (root / "bin" / "nvcc").is_file():
        return f"{root} has no bin/nvcc"
    if not (root / "include" / "cuda_runtime.h").is_file():
        return f"{root} has no include/cuda_runtime.h (bin/nvcc there is not a toolkit's own)"
    lib_dirs = [root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib",
                root / "targets" / "sbsa-linux" / "lib"]
    if not any(d.is_dir() and any(d.glob("libcudart*")) for d in lib_dirs):
        return f"{root} has no lib64/libcudart* to link against"
    return None


def find_toolkit(env=os.environ, guessed=None):
    """(toolkit root or None, problems): CUDA_HOME/CUDA_PATH, then torch's guess, each checked."""
    problems = []
    for name, candidate in (("CUDA_HOME", env.get("CUDA_HOME")), ("CUDA_PATH", env.get("CUDA_PATH")),
                            ("torch's guessed CUDA_HOME", guessed)):
        if not candidate:
            continue
        problem = toolkit_problem(candidate)
        if problem is None:
            return Path(candidate), problems
        problems.append(f"{name}={candidate}: {problem}")
    return None, problems


def want_cuda(mode, torch_cuda, toolkit, problems):
    if mode == "cpu":
        return False
    if mode == "cuda" and torch_cuda is None:
        raise RuntimeError("ZICO_FAST_BUILD=cuda, but this torch is a CPU build; install a CUDA build of torch")
    if mode == "cuda" and toolkit is None:
        found = "; ".join(problems) if problems else "CUDA_HOME is not set and torch found no toolkit"
        raise RuntimeError(f"ZICO_FAST_BUILD=cuda, but no usable CUDA toolkit: {found}. Set CUDA_HOME to the "
                           "toolkit root (the folder holding bin/nvcc, include/ and lib64/), "
                           "e.g. CUDA_HOME=$(bash scripts/cuda_home.sh)")
    return torch_cuda is not None and toolkit is not None


def extension():
    mode = os.environ.get("ZICO_FAST_BUILD", "auto").lower()
    if mode not in ("auto", "cpu", "cuda"):
        raise RuntimeError(f"ZICO_FAST_BUILD must be auto, cpu or cuda, not {mode!r}")
    toolkit, problems = find_toolkit(guessed=cpp_extension.CUDA_HOME)
    with_cuda = want_cuda(mode, torch.version.cuda, toolkit, problems)
    sources = [str(CSRC / name) for name in ("ops.cpp", "init_weights.cpp", "plan_join.cpp", "cpu/zico_stats_cpu.cpp")]
    include_dirs = []
    macros = []
    if toolkit is not None and (toolkit / "include" / "nvtx3" / "nvToolsExt.h").is_file():
        include_dirs.append(str(toolkit / "include"))  # header-only NVTX3 ranges in the C++ ops
        macros.append(("ZICO_FAST_NVTX", None))
    if with_cuda:
        os.environ["CUDA_HOME"] = str(toolkit)
        cpp_extension.CUDA_HOME = str(toolkit)
        sources.append(str(CSRC / "cuda" / "zico_stats_cuda.cu"))
        return cpp_extension.CUDAExtension(
            "zico_fast._C", sources, include_dirs=include_dirs, define_macros=macros,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS}, extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "zico_fast._C", sources, include_dirs=include_dirs, define_macros=macros,
        extra_compile_args={"cxx": CXX_FLAGS}, extra_link_args=["-fopenmp"],
    )


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import the helpers above
    setup(
        name="zico_fast",
        version="0.1.0",
        description="Fast, exact ZiCo zero-shot NAS scoring with fused C++/CUDA gradient-statistics kernels",
        long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
        long_description_content_type="text/markdown",
        packages=find_packages(include=["zico_fast", "zico_fast.*"]),
        package_data={"zico_fast": ["data/*.npz", "data/*.md", "data/*.csv"]},
        python_requires=">=3.9",
        install_requires=["numpy", "tqdm"],  # torch too, but pip must not replace the one built against
        extras_require=EXTRAS,
        ext_modules=[extension()],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
        entry_points={"console_scripts": ["zico-fast=zico_fast.cli:main"]},
    )
