"""Which memory layout the passes are fastest in, per space, on this device: the measurement behind
`--layout auto` (zico_fast.layout.MEASURED).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout.py [--rounds 3] [--device cpu]

For each space, a few architectures drawn with a fixed seed are built under the seed rule and scored
by `zico_score` (restore=False, as the engine does) on the bundled CIFAR-10 images in each layout:
  contiguous     NCHW inputs (what every run used before layouts were chosen),
  channels_last  channels_last inputs, the model as built (what `--layout channels_last` does),
  cl_model       channels_last inputs and model (for comparison: the engine does not convert models).
Rounds interleave the layouts in a shuffled order per (round, architecture), so the shared machine's
drift falls on all of them alike; the table gives the median over rounds and architectures of this
process's CPU time per candidate (one intra-op thread; wall time on a GPU) and the ratio to contiguous,
the range of contiguous / channels_last over the (round, architecture) pairs (the noise: a range
that spans 1.00x means no layout wins every pair), and the machine's 1-minute load average when the
space's row was done (other jobs share the cores).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zico_fast import zico_score  # noqa: E402
from zico_fast.data import make_batches  # noqa: E402
from zico_fast.engine.repro import machine  # noqa: E402
from zico_fast.engine.seeding import build_seeded  # noqa: E402
from zico_fast.layout import with_layout  # noqa: E402
from zico_fast.spaces import get_space  # noqa: E402

LAYOUTS = ("contiguous", "channels_last", "cl_model")
# (space, architectures, batch size, resolution): the paper's 2 x 128 at 32 px for NB201/NB101;
# 224 px for MobileNet at a smaller batch, so a round takes minutes, not hours, on one CPU thread.
# DARTS (NB301's network, ~45-69 s a candidate at 2 x 128) and NATS-Bench SSS: 2 networks each.
SPACES = (("nb201", 4, 128, 32), ("nb101", 3, 128, 32), ("mobilenet", 2, 16, 224), ("darts", 2, 128, 32),
          ("sss", 2, 128, 32))


def time_candidate(space, arch: str, batches, layout: str, device) -> float:
    model = build_seeded(space, arch, 0, device)
    if layout == "cl_model":
        model = model.to(memory_format=torch.channels_last)
    inputs = with_layout(batches, "contiguous" if layout == "contiguous" else "channels_last")
    cuda = torch.device(device).type == "cuda"
    clock = time.perf_counter if cuda else time.process_time  # a GPU's time is wall time
    if cuda:
        torch.cuda.synchronize(device)
    start = clock()
    zico_score(model, inputs, restore=False, nonfinite="nan")
    if cuda:
        torch.cuda.synchronize(device)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--spaces", default=",".join(s[0] for s in SPACES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs (1-minute load at start "
          f"{os.getloadavg()[0]:.1f}), {machine(args.device)}, torch {torch.__version__}, 1 thread, device {args.device}")
    print(f"# command: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout.py {' '.join(sys.argv[1:])}")
    print("| space | images | candidates x rounds | " + " | ".join(f"{k} s" for k in LAYOUTS)
          + " | contiguous / channels_last | contiguous / cl_model | per-pair contiguous / channels_last | load |")
    print("|---|---|---|" + "---|" * (len(LAYOUTS) + 4))
    for name, count, batch_size, resolution in SPACES:
        if name not in args.spaces.split(","):
            continue
        space = get_space(name)
        rng = random.Random(0)
        archs = [space.random(rng) for _ in range(count)]
        batches = make_batches(batch_size=batch_size, num_batches=2, resolution=resolution, device=args.device)
        times = {k: [] for k in LAYOUTS}
        time_candidate(space, archs[0], batches, "contiguous", args.device)  # warm oneDNN's kernel cache
        for round_ in range(args.rounds):
            for arch in archs:
                order = list(LAYOUTS)
                random.Random(f"{round_}/{arch}").shuffle(order)
                for layout in order:
                    times[layout].append(time_candidate(space, arch, batches, layout, args.device))
        med = {k: statistics.median(v) for k, v in times.items()}
        pairs = [a / b for a, b in zip(times["contiguous"], times["channels_last"])]
        print(f"| {name} | 2 x {batch_size} x {resolution} px | {count} x {args.rounds} | "
              + " | ".join(f"{med[k]:.3f}" for k in LAYOUTS)
              + f" | {med['contiguous'] / med['channels_last']:.2f}x | {med['contiguous'] / med['cl_model']:.2f}x"
              f" | {min(pairs):.2f}x-{max(pairs):.2f}x | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
