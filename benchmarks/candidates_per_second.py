"""Candidates per second on random NAS-Bench-201 networks: fused scorer vs the authors' loop vs bare passes.

    python benchmarks/candidates_per_second.py --device cuda --candidates 40 [--out result.json]

Per candidate: build the network directly on the device, then score it (2 batches of 128 CIFAR-10
images by default). Every runner scores every candidate, in a shuffled order per candidate, so a
busy machine slows them alike. `engine` is what search and correlate do per candidate: the worker's
reused network (zico_fast.spaces.nb201_reuse) then zico_score; the other runners build afresh.
Reported: candidates/s of each runner, the fused scorer's speed-up over the authors' loop, its
overhead over the bare forward/backward passes, and the projected time for all 15,625
NAS-Bench-201 networks at the engine's measured rate.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import zico_fast  # noqa: E402
from zico_fast.data import make_batches  # noqa: E402
from zico_fast.engine import init_seed  # noqa: E402
from zico_fast.reference import authors_zico_score  # noqa: E402
from zico_fast.spaces.nb201 import NB201Space  # noqa: E402
from zico_fast.spaces.nb201_reuse import ReusedNB201  # noqa: E402
from workloads import bare_passes  # noqa: E402

NB201_SIZE = 15_625


def _zico(model, batches):
    return zico_fast.zico_score(model, batches, restore=False)


# "zico_score" and "engine" score alike; they differ in how `timed` builds the network
RUNNERS = {"bare": bare_passes, "zico_score": _zico, "engine": _zico, "authors": authors_zico_score}


def timed(runner, space, reused, arch, batches, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    seed = init_seed(0, arch)
    # parameters are created on (or reused from) the device, never moved there
    model = reused.build(arch, seed) if runner == "engine" else space.build(arch, device=device, seed=seed)
    RUNNERS[runner](model, batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="untimed candidates first (cuDNN autotuning, allocator)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    space = NB201Space()
    rng = random.Random(args.seed)
    batches = make_batches(batch_size=args.batch_size, num_batches=args.batches, device=device)
    times = {name: [] for name in RUNNERS}
    reused = ReusedNB201(space, device)
    reused.warm_up()  # all its modules built, as in a long search
    for index in range(args.warmup + args.candidates):
        arch = space.random(rng)
        order = list(RUNNERS)
        rng.shuffle(order)
        for runner in order:
            elapsed = timed(runner, space, reused, arch, batches, device)
            if index >= args.warmup:
                times[runner].append(elapsed)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "torch": torch.__version__, "candidates": args.candidates,
              "batch_size": args.batch_size, "batches": args.batches}
    for runner, values in times.items():
        report[runner] = {"candidates_per_s": len(values) / sum(values), "median_ms": statistics.median(values) * 1e3}
    fused, authors, passes = (report[r]["median_ms"] for r in ("engine", "authors", "bare"))
    report["speedup_over_authors"] = authors / fused
    report["overhead_over_bare"] = fused / passes - 1.0
    report["all_nb201_minutes"] = NB201_SIZE / report["engine"]["candidates_per_s"] / 60
    print(f"{name}, batch {args.batch_size} x {args.batches}, {args.candidates} random NB201 candidates "
          "(build on device + score, medians):")
    for runner in RUNNERS:
        figures = report[runner]
        print(f"  {runner:<11} {figures['median_ms']:8.2f} ms   {figures['candidates_per_s']:7.2f} candidates/s")
    print(f"  engine vs authors: {report['speedup_over_authors']:.2f}x faster;"
          f" vs bare passes: {100 * report['overhead_over_bare']:+.1f}%")
    print(f"  all {NB201_SIZE:,} NB201 networks at the engine's rate (one worker): {report['all_nb201_minutes']:.1f} min")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
