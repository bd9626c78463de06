"""Builds zico_fast and its one extension, zico_fast._C (CPU kernels always, CUDA kernels when possible).

Environment:
  ZICO_FAST_BUILD=auto|cpu|cuda  auto (default) builds CUDA kernels when torch has CUDA and a
                                 toolkit is found; cpu never does; cuda fails loudly if it cannot.
  CUDA_HOME                      the CUDA toolkit root (the folder holding bin/nvcc).
  TORCH_CUDA_ARCH_LIST           GPU architectures to compile for, e.g. "9.0".
"""
import os
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent
CSRC = Path("csrc")


def toolkit_root():
    """The CUDA toolkit named by CUDA_HOME/CUDA_PATH (or found by torch), if it really holds nvcc."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return Path(candidate)
    return None


def want_cuda(mode, toolkit):
    if mode == "cpu":
        return False
    possible = torch.version.cuda is not None and toolkit is not None
    if mode == "cuda" and not possible:
        raise RuntimeError(
            "ZICO_FAST_BUILD=cuda, but "
            + ("this torch is a CPU build; install a CUDA build of torch" if torch.version.cuda is None
               else "no CUDA toolkit was found; set CUDA_HOME to the folder holding bin/nvcc")
        )
    return possible


def extension():
    mode = os.environ.get("ZICO_FAST_BUILD", "auto").lower()
    if mode not in ("auto", "cpu", "cuda"):
        raise RuntimeError(f"ZICO_FAST_BUILD must be auto, cpu or cuda, not {mode!r}")
    toolkit = toolkit_root()
    with_cuda = want_cuda(mode, toolkit)
    # -g0 overrides the -g in Python's CFLAGS: debug info triples the compile time of torch headers.
    cxx = ["-O3", "-fopenmp", "-g0"]  # the C++ standard comes from torch
    sources = [str(CSRC / "ops.cpp"), str(CSRC / "cpu" / "zico_stats_cpu.cpp")]
    include_dirs = []
    macros = []
    if toolkit is not None and (toolkit / "include" / "nvtx3" / "nvToolsExt.h").is_file():
        include_dirs.append(str(toolkit / "include"))  # header-only NVTX3 ranges in the C++ ops
        macros.append(("ZICO_FAST_NVTX", None))
    if with_cuda:
        os.environ["CUDA_HOME"] = str(toolkit)
        cpp_extension.CUDA_HOME = str(toolkit)
        sources.append(str(CSRC / "cuda" / "zico_stats_cuda.cu"))
        # No --use_fast_math: it flushes denormals, and tiny squared deviations must underflow
        # exactly as numpy's do (NOTE: [Dropped elements] in csrc/zico_math.h).
        nvcc = ["-O3", "-lineinfo"]
        return cpp_extension.CUDAExtension(
            "zico_fast._C", sources, include_dirs=include_dirs, define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "zico_fast._C", sources, include_dirs=include_dirs, define_macros=macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"],
    )


setup(
    name="zico_fast",
    version="0.1.0",
    description="Fast, exact ZiCo zero-shot NAS scoring with fused C++/CUDA gradient-statistics kernels",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["zico_fast", "zico_fast.*"]),
    package_data={"zico_fast": ["data/*.npz", "data/*.md", "data/*.csv"]},
    python_requires=">=3.9",
    install_requires=["numpy", "tqdm"],
    extras_require={"plot": ["matplotlib"], "test": ["pytest", "pytest-benchmark", "scipy"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["zico-fast=zico_fast.cli:main"]},
)
