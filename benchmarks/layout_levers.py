"""Other levers on the CPU passes besides the layout, timed side by side (issue 24's "any other lever").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_levers.py [--rounds 3]

Three NB201 candidates (2 x 128 x 32 px, channels_last images, one thread) scored by `zico_score`
under each setting, settings taking turns in a shuffled order per round; median CPU seconds per
candidate:
  default         what the engine runs
  mkldnn_off      torch.backends.mkldnn.enabled = False (torch's own conv kernels instead of oneDNN's)
  flush_denormal  torch.set_flush_denormal(True) (would change scores wherever denormals occur)
"""
from __future__ import annotations

import argparse
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

SETTINGS = ("default", "mkldnn_off", "flush_denormal")


def per_candidate(setting: str, space, archs, batches) -> float:
    torch.backends.mkldnn.enabled = setting != "mkldnn_off"
    torch.set_flush_denormal(setting == "flush_denormal")
    try:
        total = 0.0
        for arch in archs:
            model = build_seeded(space, arch, 0, "cpu")
            start = time.process_time()
            zico_score(model, batches, restore=False)
            total += time.process_time() - start
        return total / len(archs)
    finally:
        torch.backends.mkldnn.enabled = True
        torch.set_flush_denormal(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space, rng = get_space("nb201"), random.Random(0)
    archs = [space.random(rng) for _ in range(3)]
    batches = with_layout(make_batches(batch_size=128, num_batches=2), "channels_last")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {machine('cpu')}, torch {torch.__version__}, 1 thread")
    print(f"# command: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_levers.py {' '.join(sys.argv[1:])}")
    per_candidate("default", space, archs, batches)  # warm oneDNN's kernel cache
    times = {k: [] for k in SETTINGS}
    for round_ in range(args.rounds):
        order = list(SETTINGS)
        random.Random(round_).shuffle(order)
        for setting in order:
            times[setting].append(per_candidate(setting, space, archs, batches))
    default = statistics.median(times["default"])
    for setting, values in times.items():
        print(f"{setting:15s} {statistics.median(values):.3f} s per candidate, "
              f"default / this = {default / statistics.median(values):.2f}x")


if __name__ == "__main__":
    main()
