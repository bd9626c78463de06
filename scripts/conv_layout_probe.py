"""Probe torch's CPU conv backward for the channels_last defect that zico_fast.layout steers around.

    .venv/bin/python scripts/conv_layout_probe.py --sweep            # the table in benchmarks/results/
    .venv/bin/python scripts/conv_layout_probe.py --case 4 16 2 1 0 float32 xw 64 --isa AVX2

Each case runs in its own process (the defect corrupts the heap, so a case can kill its process):
one Conv2d of the given shape, 20 forward/backward passes with a weight and an input gradient,
each checked against the same passes in float64 on contiguous tensors. glibc's heap checks are on
(MALLOC_CHECK_=3), so a corrupted heap is caught at the next free instead of much later. A case is
"crash" (the process died; the signal is given), "wrong" (a gradient differs from float64 by more
than rounding) or "ok". `--isa` caps the instruction set oneDNN may use (ONEDNN_MAX_CPU_ISA), so an
AVX-512 machine can run the AVX2 kernels that AVX2-only CPUs (e.g. AMD EPYC before Zen 4) run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"-": "input and weight contiguous", "x": "channels_last input", "w": "channels_last weight",
           "xw": "channels_last input and weight"}


def passes(cin: int, cout: int, stride: int, groups: int, padding: int, dtype: str, fmt: str, size: int) -> str:
    """Runs the case in this process: 'ok' or 'wrong'; a crash ends the process."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    tolerance = 1e-3 if dtype == "float32" else 5e-2
    for _ in range(20):
        x = torch.randn(2, cin, size, size, generator=gen)
        w = torch.randn(cout, cin // groups, 1, 1, generator=gen)
        want = [t.double().requires_grad_() for t in (x, w)]
        F.conv2d(*want, None, stride, padding, 1, groups).square().sum().backward()
        got = [t.to(getattr(torch, dtype)) for t in (x, w)]
        if "x" in fmt:
            got[0] = got[0].to(memory_format=torch.channels_last)
        if "w" in fmt:
            got[1] = got[1].to(memory_format=torch.channels_last)
        got = [t.requires_grad_() for t in got]
        F.conv2d(*got, None, stride, padding, 1, groups).float().square().sum().backward()
        for g, r in zip(got, want):
            if float((g.grad.double() - r.grad).abs().max()) > tolerance * float(r.grad.abs().max()):
                return "wrong"
    return "ok"


def run_case(cin: int, cout: int, stride: int, groups: int, padding: int, dtype: str, fmt: str, size: int,
             isa: str | None = None) -> str:
    """The case's verdict from a fresh process: 'ok', 'wrong' or 'crash (signal N)'."""
    env = {**os.environ, "MALLOC_CHECK_": "3", "OMP_NUM_THREADS": "1"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    args = [str(v) for v in (cin, cout, stride, groups, padding, dtype, fmt, size)]
    proc = subprocess.run([sys.executable, __file__, "--case", *args, "--in-process"], env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return f"crash (signal {-proc.returncode})" if proc.returncode < 0 else f"crash (exit {proc.returncode})"
    return proc.stdout.strip().splitlines()[-1]


def sweep_cases():
    """The grid of the committed table: the failing shape, and each of its neighbours one change away."""
    base = dict(cin=4, cout=16, stride=2, groups=1, padding=0, dtype="float32", fmt="xw", size=128)
    yield base
    for key, values in (("cin", [1, 7, 8, 12, 15, 16, 17, 20, 24]), ("stride", [1, 3]), ("fmt", ["-", "x", "w"]),
                        ("groups", [2, 4]), ("padding", [1]), ("dtype", ["bfloat16", "float16"]),
                        ("size", [8, 16, 32, 64, 224]), ("cout", [4, 64])):
        for value in values:
            yield {**base, key: value}


def sweep(isas: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    import torch
    from torch import nn

    from zico_fast.layout import hits_cpu_conv_defect

    print(f"# torch {torch.__version__}, oneDNN ISA cap per column; guard = zico_fast.layout.hits_cpu_conv_defect")
    print("| cin | cout | stride | groups | padding | dtype | layout | H=W | guard | "
          + " | ".join(isa or "native" for isa in isas) + " |")
    print("|" + "---|" * (9 + len(isas)))
    for case in sweep_cases():
        conv = nn.Conv2d(case["cin"], case["cout"], 1, case["stride"], case["padding"], groups=case["groups"])
        verdicts = [run_case(**case, isa=isa) for isa in isas]
        print("| " + " | ".join(str(case[k]) for k in ("cin", "cout", "stride", "groups", "padding", "dtype"))
              + f" | {case['fmt']} | {case['size']} | {'convert' if hits_cpu_conv_defect(conv) else '-'} | "
              + " | ".join(verdicts) + " |", flush=True)
    print("\nlayout: " + "; ".join(f"{k} = {v}" for k, v in FORMATS.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=8, metavar=("CIN", "COUT", "STRIDE", "GROUPS", "PADDING", "DTYPE",
                                                    "LAYOUT", "SIZE"))
    parser.add_argument("--isa", help="cap oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    parser.add_argument("--sweep", action="store_true", help="print the table for native and AVX2 kernels")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sweep:
        return sweep([None, "AVX2"])
    if not args.case:
        parser.error("give --case or --sweep")
    cin, cout, stride, groups, padding = (int(v) for v in args.case[:5])
    dtype, fmt, size = args.case[5], args.case[6], int(args.case[7])
    if args.in_process:
        print(passes(cin, cout, stride, groups, padding, dtype, fmt, size))
    else:
        print(run_case(cin, cout, stride, groups, padding, dtype, fmt, size, args.isa))


if __name__ == "__main__":
    main()
