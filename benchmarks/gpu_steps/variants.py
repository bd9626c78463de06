"""Times builds of the kernels side by side: the default build and the variants of NOTE: [Measured
variants] (csrc/cuda/zico_stats_kernels.cuh), and the cost of the scalar path a misaligned tensor
takes (whether a peel loop is worth writing).

    python benchmarks/gpu_steps/variants.py default=auto minblocks3=DIR/zico_fast_variant.so ...
    python benchmarks/gpu_steps/variants.py --device cpu --elements 100000 default=auto   (CI)

Two builds register the same ops, so each runs in its own child process (which loads only its
library); the builds take turns for --rounds rounds and each case keeps its best median. Prints
one line per case and build (median ms, GB/s) and the ratio of each build's time to the default's
(below 1: faster). `default=auto` is the installed zico_fast._C. A missing library is SKIPPED.
"""
import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

NO_BAD_BATCH = 2**31 - 1  # zico_fast.stats.NO_BAD_BATCH, without importing zico_fast (and its ops)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cases(elements, device):
    """(name, bytes moved, function) for each timed call; tensors made once."""
    ops = torch.ops.zico_fast
    out = []
    many = [elements // 200] * 200  # many small tensors, like a 1.5M-parameter network
    for dtype_name, dtype in DTYPES.items():
        for shape_name, sizes in (("1 tensor", [elements]), ("200 tensors", many)):
            g = [torch.randn(n, device=device).to(dtype) for n in sizes]
            k = [torch.randn(n, device=device).to(dtype) for n in sizes]
            m = [[torch.rand(n, device=device) for n in sizes] for _ in range(3)]
            flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in sizes]
            moved = sum(sizes) * (2 * g[0].element_size() + 6 * 4)
            out.append((f"accumulate_ {dtype_name} {shape_name}", moved,
                        lambda g=g, k=k, m=m, f=flags: ops.accumulate_(g, k, *m, f, 3, False)))
        first, second = (torch.randn(elements, device=device).to(dtype) for _ in range(2))
        flag = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device)]
        out.append((f"pair_ratio_sums {dtype_name} 1 tensor", elements * 2 * first.element_size(),
                    lambda a=first, b=second, f=flag: ops.pair_ratio_sums([a], [b], f, 1)))
    m = [[torch.rand(elements, device=device) + 1] for _ in range(3)]
    out.append(("ratio_sums 1 tensor", elements * 12, lambda m=m: ops.ratio_sums(*m, 3)))
    # The same float32 update on views one element off 16-byte alignment: the scalar path.
    g, k = (torch.randn(elements + 1, device=device)[1:] for _ in range(2))
    m = [torch.rand(elements + 1, device=device)[1:] for _ in range(3)]
    flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device)]
    out.append(("accumulate_ float32 1 tensor misaligned", elements * 32,
                lambda: ops.accumulate_([g], [k], *[[t] for t in m], flags, 3, False)))
    return out


def child(library, elements, device, repeats):
    """Loads one build and prints {case: median seconds} as JSON."""
    torch.ops.load_library(library)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    medians = {}
    for name, _, call in cases(elements, device):
        for _ in range(3):
            call()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    print(json.dumps(medians))


def installed_library():
    spec = importlib.util.find_spec("zico_fast._C")
    return spec.origin if spec else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="*", help="NAME=LIBRARY (the first is the baseline; LIBRARY auto: installed)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--elements", type=int, default=32 * 2**20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.elements, args.device, args.repeats)
    if not args.builds:
        parser.error("name at least one build, e.g. default=auto")
    builds = {}
    for item in args.builds:
        name, _, library = item.partition("=")
        library = installed_library() if library == "auto" else library
        if Path(library).is_file():
            builds[name] = library
        else:
            print(f"SKIPPED variant {name}: no library at {library!r} (its build failed or did not finish)")
    if not builds:
        return 77
    best = {name: {} for name in builds}
    for _ in range(args.rounds):
        for name, library in builds.items():
            run = subprocess.run([sys.executable, __file__, "--child", library, "--device", args.device,
                                  "--elements", str(args.elements), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"variant {name}: FAILED\n{run.stderr[-2000:]}")
                return 1
            for case, seconds in json.loads(run.stdout.strip().splitlines()[-1]).items():
                best[name][case] = min(seconds, best[name].get(case, float("inf")))
    base = next(iter(builds))
    moved = {name: size for name, size, _ in cases(args.elements, "meta")}  # sizes only, nothing runs
    print(f"variants on {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), "
          f"{args.elements} elements, best of {args.rounds} rounds of {args.repeats}-call medians; baseline {base}")
    for case, size in moved.items():
        for name in builds:
            seconds = best[name][case]
            print(f"case {case:<42} {name:<12} {seconds * 1e3:9.3f} ms {size / seconds / 1e9:8.1f} GB/s "
                  f"ratio {seconds / best[base][case]:6.3f}")
    misaligned = best[base]["accumulate_ float32 1 tensor misaligned"] / best[base]["accumulate_ float32 1 tensor"]
    print(f"ratio misaligned/aligned accumulate_ float32 ({base}): {misaligned:.3f}  (a peel loop could win back this)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
