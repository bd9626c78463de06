"""Builds one variant of the CUDA kernels (NOTE: [Measured variants] in
csrc/cuda/zico_stats_kernels.cuh) into its own folder, as a library that
torch.ops.load_library loads, for benchmarks/gpu_steps/variants.py to time beside the default.

    python benchmarks/gpu_steps/build_variant.py --define ZICO_MIN_BLOCKS_PER_SM=3 --out DIR

The sources, flags and macros are setup.py's own (its extension(), with ZICO_FAST_BUILD=cuda),
plus the define, and ptxas -v so the log shows each kernel's registers and spills.
"""
import argparse
import importlib.util
import os
from pathlib import Path

from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parents[2]


def setup_extension():
    spec = importlib.util.spec_from_file_location("zico_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # setup() itself only runs under __main__
    os.environ["ZICO_FAST_BUILD"] = "cuda"
    return setup.extension()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--define", required=True, help="NAME or NAME=VALUE, passed to nvcc as -D")
    parser.add_argument("--out", type=Path, required=True, help="build folder (made if missing)")
    args = parser.parse_args()
    ext = setup_extension()
    macros = [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in ext.define_macros]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "zico_fast_variant"
    cpp_extension.load(
        name=name, sources=[str(ROOT / s) for s in ext.sources],
        extra_cflags=ext.extra_compile_args["cxx"] + macros,
        extra_cuda_cflags=ext.extra_compile_args["nvcc"] + macros + [f"-D{args.define}", "-Xptxas=-v"],
        extra_ldflags=["-fopenmp"], extra_include_paths=ext.include_dirs,
        build_directory=str(args.out), is_python_module=False, verbose=True,
    )
    print(f"variant library: {args.out / (name + '.so')}")


if __name__ == "__main__":
    main()
