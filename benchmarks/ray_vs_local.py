"""Candidates per second on NAS-Bench-201: the local process pool vs Ray actors, same worker count.

    python benchmarks/ray_vs_local.py --workers 2 --candidates 24 --rounds 3 [--out result.json]

Both backends score the same random NB201 candidates (the paper's network, 2 batches of real
CIFAR-10 images) through the engine's Backend interface, one thread per worker. Rounds alternate
local, ray, local, ray, ... so a busy machine slows both alike; start-up (process spawn, Ray actors)
is timed apart from the scoring. Reported per backend: candidates/s (median of rounds); Ray's
overhead per candidate as (ray - local) / candidate and as a share of a candidate's time; and the
round trip of an empty actor call, the part of that overhead Ray itself adds. The records of both
backends are compared bit for bit.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import ray

from zico_fast.data import make_batches
from zico_fast.engine import ProcessBackend, RayBackend, Task, WorkerConfig
from zico_fast.spaces.nb201 import NB201Space


class _Echo:
    def ping(self, x):
        return x


def timed_round(backend, tasks) -> tuple[float, dict]:
    start = time.perf_counter()
    records = {task.id: rec for task, rec in backend.run(tasks)}
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=24, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    space = NB201Space()
    rng = random.Random(0)
    tasks = [Task(i, space.arch_from_index(rng.randrange(15_625))) for i in range(args.candidates)]
    config = WorkerConfig(space, [make_batches(None, args.batch_size, 2, 0)], "cpu", 1, 0, ("zico",))

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    backends, startup = {"local": ProcessBackend(args.workers), "ray": RayBackend(args.workers)}, {}
    for name, backend in backends.items():
        t = time.perf_counter()
        backend.start(config)
        startup[name] = time.perf_counter() - t
    # warm both (first-call imports, allocator), untimed
    for backend in backends.values():
        list(backend.run(tasks[:args.workers]))
    seconds, records = {"local": [], "ray": []}, {}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            s, records[name] = timed_round(backend, tasks)
            seconds[name].append(s)
    for backend in backends.values():
        backend.close()
    echo = ray.remote(num_cpus=0)(_Echo).remote()
    ray.get(echo.ping.remote(0))
    trips = []
    for i in range(200):
        t = time.perf_counter()
        ray.get(echo.ping.remote(i))
        trips.append(time.perf_counter() - t)
    ray.shutdown()

    identical = all(records["local"][i]["score"] == records["ray"][i]["score"] for i in records["local"])
    median = {k: statistics.median(v) for k, v in seconds.items()}
    per_candidate = {k: v / args.candidates * args.workers for k, v in median.items()}  # one worker's time
    overhead = (median["ray"] - median["local"]) / args.candidates * args.workers
    result = {
        "workers": args.workers, "candidates_per_round": args.candidates, "rounds": args.rounds,
        "batch_size": args.batch_size, "network": "NB201 C=16 N=5, 32 px, 2 batches, 1 thread per worker",
        "startup_seconds": {k: round(v, 2) for k, v in startup.items()},
        "round_seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "candidates_per_second": {k: round(args.candidates / v, 3) for k, v in median.items()},
        "seconds_per_candidate_per_worker": {k: round(v, 4) for k, v in per_candidate.items()},
        "ray_overhead_ms_per_candidate": round(overhead * 1e3, 2),
        "ray_overhead_share": round(overhead / per_candidate["local"], 4),
        "empty_actor_call_ms_median": round(statistics.median(trips) * 1e3, 3),
        "scores_bit_identical": identical,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
