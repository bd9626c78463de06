"""Per-candidate cost of the proxy sets against ZiCo alone, side by side in one run.

NB201 at the paper's settings (2 batches of 128 real CIFAR-10 images at 32px, default init).
Every round scores each architecture once with every set, in a rotating order (interleaved, so
load changes on a shared machine hit all sets alike). Per set it prints the median time per
candidate and the median of its per-candidate ratios to `zico_score` alone: on the CPU both the process's CPU time (what the
set costs, little moved by other processes on a shared machine) and wall time; on a GPU wall time
after synchronising. The last line is the issue-24 goal: `--proxies all` <= 1.3x ZiCo alone.

usage: python benchmarks/proxy_cost.py [--archs 4] [--rounds 3] [--threads 1] [--device cpu] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import zico_fast
from zico_fast.data import make_batches
from zico_fast.proxies import ALL, compute
from zico_fast.spaces import get_space

SETS = {
    "zico_score alone": None,
    "compute('zico')": ("zico",),
    "+ params, flops, grad_norm, snip, gsnr, zico_bc": ("zico", "params", "flops", "grad_norm", "snip", "gsnr", "zico_bc"),
    "+ naswot": ("zico", "naswot"),
    "+ expressivity, progressivity": ("zico", "expressivity", "progressivity"),
    "+ trainability": ("zico", "trainability"),
    "all but trainability": tuple(n for n in ALL if n != "trainability"),
    "all (every proxy; the ensemble's inputs)": "all",
}
ALL_LABEL = "all (every proxy; the ensemble's inputs)"


def paired(times: dict[str, list[float]], label: str) -> float:
    """Median over (round, architecture) of the set's time over ZiCo alone's on the same network
    in the same round: each architecture costs differently, so ratios are taken pair by pair."""
    return statistics.median(t / base for t, base in zip(times[label], times["zico_score alone"]))


def machine(device: str) -> str:
    if device != "cpu":
        return torch.cuda.get_device_name(torch.device(device))
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=4, help="NB201 architectures (fixed benchmark indices)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = get_space("nb201")
    batches = make_batches(batch_size=128, num_batches=2, seed=0, device=args.device)
    # spread over the space: indices 0, 3906, 7812, ... (deterministic, no choice made on results)
    archs = [space.arch_from_index(i * (15625 // args.archs)) for i in range(args.archs)]
    on_cpu = args.device == "cpu"
    wall: dict[str, list[float]] = {name: [] for name in SETS}
    cpu: dict[str, list[float]] = {name: [] for name in SETS}
    labels = list(SETS)
    for names in (None, "all"):  # warm-up, untimed: the first pass in a process pays one-off set-up
        model = space.build(archs[0]).to(args.device)
        compute(model, batches, names, cost=space.cost(archs[0])) if names else zico_fast.zico_score(model, batches)
    for r in range(args.rounds):
        for a, arch in enumerate(archs):
            order = labels[(r + a) % len(labels):] + labels[:(r + a) % len(labels)]
            for label in order:
                torch.manual_seed(a)
                model = space.build(arch).to(args.device)
                start, start_cpu = time.perf_counter(), time.process_time()
                if SETS[label] is None:
                    zico_fast.zico_score(model, batches, restore=False)
                else:
                    compute(model, batches, SETS[label], cost=space.cost(arch), restore=False, nonfinite="nan")
                if not on_cpu:
                    torch.cuda.synchronize()
                wall[label].append(time.perf_counter() - start)
                cpu[label].append(time.process_time() - start_cpu)
    lines = [f"{' '.join(['python'] + sys.argv)}",
             f"{datetime.date.today()}, {machine(args.device)}, {platform.machine()}, torch {torch.__version__}, "
             f"device {args.device}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at the end",
             f"NB201, 2 x 128 at 32px, {args.archs} archs x {args.rounds} rounds, interleaved; median s per "
             "candidate, and median of per-candidate ratios to ZiCo alone (same network, same round)", ""]
    head = f"{'proxy set':<48} {'wall s':>8} {'x ZiCo':>7}"
    lines.append(head + (f" {'CPU s':>8} {'x ZiCo':>7}" if on_cpu else ""))
    for label in labels:
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        lines.append(f"{label:<48} {w:>8.3f} {paired(wall, label):>7.2f}"
                     + (f" {c:>8.3f} {paired(cpu, label):>7.2f}" if on_cpu else ""))
    ratio = paired(cpu if on_cpu else wall, ALL_LABEL)
    lines += ["", f"--proxies all / ZiCo alone ({'CPU time' if on_cpu else 'wall time'}): {ratio:.2f} "
                  f"(goal <= 1.30: {'met' if ratio <= 1.30 else 'not met'})"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
