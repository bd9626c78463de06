"""Issue 24's two goals for the memory layout, each measured side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_goals.py [--rounds 3] [--rows 8] [--user-rounds 7]

(a) NB201 per candidate, end to end through `zico-fast correlate` (2 batches of 128, one thread,
    one worker process, the same `--sample` rows): `--layout contiguous` (every candidate's layout
    before this change: the scorer made inputs NCHW) against `--layout auto` (channels_last on the
    CPU), runs taking turns. Per candidate: the run's wall time over its rows (worker start-up
    included), and the median of the log's per-candidate seconds (build + passes + scorer).
(b) `zico_score` against the user's own bare loop (train(), and per batch zero_grad, forward,
    cross-entropy, backward) on the same model and tensors: channels_last images as loaded the usual
    way, `torch.tensor(hwc_uint8).permute(0, 3, 1, 2).float() / 255`, 2 batches of 64, for a small
    depthwise/grouped CNN and the README's NB201 network. Calls take turns in a shuffled order per
    round; medians of this process's CPU time.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from zico_fast import zico_score  # noqa: E402
from zico_fast.engine.repro import machine  # noqa: E402
from zico_fast.spaces import get_space  # noqa: E402

README_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def correlate_run(layout: str, rows: int, out: Path) -> tuple[float, float]:
    """(wall seconds per row, median logged seconds per candidate) of one fresh correlate run."""
    command = [sys.executable, "-m", "zico_fast", "correlate", "--space", "nb201", "--sample", str(rows),
               "--threads", "1", "--workers", "1", "--layout", layout, "--no-progress", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    return wall / rows, statistics.median(r["seconds"] for r in records)


def goal_a(rounds: int, rows: int) -> None:
    times = {"contiguous": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for layout in (("contiguous", "auto") if round_ % 2 == 0 else ("auto", "contiguous")):
                times[layout].append(correlate_run(layout, rows, Path(tmp) / f"{layout}-{round_}"))
    print(f"\n(a) NB201 through correlate, {rows} rows x {rounds} runs per layout, 2 x 128 x 32 px, 1 thread, 1 worker")
    print("| layout | wall s per row (median of runs) | logged s per candidate (median of runs) |")
    print("|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    for k, (wall, cand) in med.items():
        print(f"| {k} | {wall:.3f} | {cand:.3f} |")
    print(f"speed-up of auto (channels_last) over contiguous: {med['contiguous'][0] / med['auto'][0]:.2f}x wall per row, "
          f"{med['contiguous'][1] / med['auto'][1]:.2f}x per candidate")


class SmallCNN(nn.Module):
    """A small depthwise/grouped CNN of the kind a user brings."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Conv2d(64, 128, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, x):
        return self.body(x)


def bare_loop(model, batches) -> None:
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()


def goal_b(rounds: int) -> None:
    gen = torch.Generator().manual_seed(0)
    hwc = [torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=gen) for _ in range(2)]
    batches = [(x.permute(0, 3, 1, 2).float() / 255, torch.randint(0, 10, (64,), generator=gen)) for x in hwc]
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    models = {"small depthwise/grouped CNN": SmallCNN(), "NB201 (README arch)": get_space("nb201").build(README_ARCH)}
    print(f"\n(b) zico_score vs the bare loop on channels_last user images (HWC uint8 permuted, /255), 2 x 64 x 32 px, "
          f"{rounds} rounds")
    print("| model | bare loop s | zico_score s | zico_score / bare |")
    print("|---|---|---|---|")
    for name, model in models.items():
        runs = {"bare": lambda: bare_loop(model, batches), "zico": lambda: zico_score(model, batches)}
        for run in runs.values():  # warm-up
            run()
        times = {k: [] for k in runs}
        for round_ in range(rounds):
            order = list(runs)
            random.Random(round_).shuffle(order)
            for k in order:
                start = time.process_time()
                runs[k]()
                times[k].append(time.process_time() - start)
        bare, zico = statistics.median(times["bare"]), statistics.median(times["zico"])
        print(f"| {name} | {bare:.3f} | {zico:.3f} | {zico / bare:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="correlate runs per layout (goal a)")
    parser.add_argument("--rows", type=int, default=8, help="NB201 rows per correlate run (goal a)")
    parser.add_argument("--user-rounds", type=int, default=7, help="rounds of goal b")
    parser.add_argument("--only", choices=("a", "b"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {machine('cpu')}, {torch.get_num_threads()} thread, "
          f"torch {torch.__version__}")
    print(f"# command: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_goals.py {' '.join(sys.argv[1:])}")
    if args.only != "b":
        goal_a(args.rounds, args.rows)
    if args.only != "a":
        goal_b(args.user_rounds)


if __name__ == "__main__":
    main()
