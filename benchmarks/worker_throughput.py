"""Candidates per second through the scoring backends, side by side: the calling process, and worker
processes (one worker with tasks sent one at a time or ahead, and more workers on one device).

    python benchmarks/worker_throughput.py [--device cuda] [--workers 1,2,4] [--candidates 48] [--rounds 2]

Every backend scores the same random NB201 candidates the way search and correlate do (each worker's
reused network, then zico_score) on the same batches. The backends are started once (start-up timed
apart), warmed by one untimed round, then take turns round after round, so a drifting machine slows
them alike. Scores are compared bit for bit across backends and rounds. Per backend:
  candidates/s    candidates over the wall time of its rounds;
  outside         per candidate, the wall time x workers minus the workers' own seconds in
                  score_candidate: what a worker spends waiting for the run (round trips, the
                  parent's bookkeeping, idling at the tail of a batch of tasks).
The row to read on a GPU is candidates/s against the worker count: the largest count that still
gains >= 10% is the default to pick for CUDA runs (benchmarks/RESULTS.md, "many candidates on one GPU").
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
import warnings
from pathlib import Path

import torch

from zico_fast.data import make_batches
from zico_fast.engine.pool import InProcessBackend, ProcessBackend, Task, WorkerConfig
from zico_fast.spaces.nb201 import NB201Space


def backends(workers: list[int]) -> dict:
    made = {"in-process": InProcessBackend(), "1 worker, one task at a time": ProcessBackend(1, ahead=0),
            "1 worker": ProcessBackend(1)}
    for count in sorted(set(workers) - {1}):
        made[f"{count} workers"] = ProcessBackend(count)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare, comma separated")
    parser.add_argument("--candidates", type=int, default=48, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds, after one untimed")
    parser.add_argument("--batch-size", type=int, help="default: 128 on a GPU, 8 on a CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    # some random cells score 0 (ZeroSpreadWarning) at any batch size; expected here, in every process
    warnings.simplefilter("ignore", UserWarning)
    os.environ["PYTHONWARNINGS"] = "ignore::UserWarning"  # read by the spawned workers at start-up
    device = torch.device(args.device)
    batch_size = args.batch_size or (128 if device.type == "cuda" else 8)
    space = NB201Space()
    rng = random.Random(0)
    archs = list(dict.fromkeys(space.random(rng) for _ in range(args.candidates)))
    tasks = [Task(i, arch) for i, arch in enumerate(archs)]
    config = WorkerConfig(space, [make_batches(batch_size=batch_size, num_batches=2)], str(device), args.threads, 0)
    torch.set_num_threads(args.threads)  # the in-process backend scores here

    made, startup = backends([int(w) for w in args.workers.split(",")]), {}
    wall = {name: 0.0 for name in made}
    inside = {name: 0.0 for name in made}
    reference, same = None, {}  # the in-process scores (its backend runs first); every round is compared
    try:
        for name, backend in made.items():
            started = time.perf_counter()
            backend.start(config)
            startup[name] = time.perf_counter() - started
        for round_ in range(args.rounds + 1):  # round 0 warms every worker (modules, cuDNN, allocator)
            for name, backend in made.items():
                started = time.perf_counter()
                records = dict(backend.run(tasks))
                elapsed = time.perf_counter() - started
                scores = {t.id: r["score"] for t, r in records.items()}
                reference = reference or scores
                same[name] = same.get(name, True) and scores == reference
                if round_:
                    wall[name] += elapsed
                    inside[name] += sum(r["seconds"] for r in records.values())
    finally:
        for backend in made.values():
            backend.close()

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} thread per worker)"
    n = len(tasks) * args.rounds
    print(f"{where}; torch {torch.__version__}; {len(tasks)} random NB201 candidates x {args.rounds} rounds, "
          f"2 batches of {batch_size}x3x32x32")
    print(f"{'backend':30s} {'start s':>8s} {'cand/s':>8s} {'ms/cand':>8s} {'outside ms':>10s}  same scores")
    report = {"device": where, "torch": torch.__version__, "candidates": n, "batch_size": batch_size, "backends": {}}
    for name, backend in made.items():
        workers = getattr(backend, "workers", 1)
        outside = (wall[name] * workers - inside[name]) / n * 1e3
        row = {"startup_s": startup[name], "candidates_per_s": n / wall[name], "ms_per_candidate": wall[name] / n * 1e3,
               "outside_ms": outside, "same_scores": same[name]}
        report["backends"][name] = row
        print(f"{name:30s} {row['startup_s']:8.2f} {row['candidates_per_s']:8.2f} {row['ms_per_candidate']:8.2f} "
              f"{outside:10.3f}  {'yes' if same[name] else 'NO'}")
    per_worker = {name: r["candidates_per_s"] for name, r in report["backends"].items() if "worker" in name
                  and "one task" not in name}
    print("throughput vs 1 worker: " + ", ".join(f"{name} {rate / per_worker['1 worker']:.2f}x"
                                                  for name, rate in per_worker.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not all(same.values()):
        raise SystemExit("scores differ between backends")


if __name__ == "__main__":
    main()
