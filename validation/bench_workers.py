"""Which is faster on this machine for NB201 nets at batch 128: 2 worker processes x 1 intra-op
thread, or 1 process x 2 threads?  Scores the same 24 architectures (sample 24, seed 123 of
nb201_dev.csv, 2 batches of 128 bundled CIFAR-10 images) both ways, in interleaved rounds with
fresh output folders, and writes validation/workers_benchmark.json.
Run: .venv/bin/python validation/bench_workers.py [rounds]"""
import json
import sys
import tempfile
import time
from pathlib import Path

from zico_fast.correlate import correlate, machine_info

TRUTH = Path(__file__).resolve().parents[2] / "shared/data/nb201_dev.csv"
CONFIGS = [("2 processes x 1 thread", 2, 1), ("1 process x 2 threads", 1, 2)]
SAMPLE = 24


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    runs = []
    for rnd in range(rounds):
        for name, workers, threads in (CONFIGS if rnd % 2 == 0 else CONFIGS[::-1]):
            with tempfile.TemporaryDirectory() as tmp:
                load = loadavg()
                start = time.perf_counter()
                report = correlate(TRUTH, tmp, sample=SAMPLE, seed=123, workers=workers, threads=threads,
                                   progress=False)
                wall = time.perf_counter() - start
            runs.append({"config": name, "round": rnd, "wall_seconds": round(wall, 2),
                         "sum_of_per_arch_seconds": report["timings"]["scoring_seconds_total"],
                         "loadavg_1min_before": load})
            print(runs[-1], file=sys.stderr, flush=True)
    best = {name: min(r["wall_seconds"] for r in runs if r["config"] == name) for name, _, _ in CONFIGS}
    out = {"what": f"wall seconds to score {SAMPLE} NB201 architectures (sample {SAMPLE}, seed 123), "
                   "2 batches of 128, including process start-up and data loading",
           "runs": runs, "best_wall_seconds": best, "faster": min(best, key=best.get),
           "machine": {k: v for k, v in machine_info(0, 0).items() if k not in ("workers", "threads_per_worker")},
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "note": "the 2 CPUs are shared with other users' jobs (loadavg_1min_before > 2 means contention)"}
    Path(__file__).with_name("workers_benchmark.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":  # workers are spawned and import this file
    main()
