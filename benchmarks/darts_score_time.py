"""Time to build and to score one network of the darts space at ZiCo's setting: 2 batches of 128
bundled CIFAR-10 images, one thread, on the smallest, the median and the largest row (by FLOPs) of
the bundled NAS-Bench-301 table. It sizes the 425-row correlate run and tells whether a fast build
would pay (it would if building were a noticeable share of scoring).

    OMP_NUM_THREADS=1 python benchmarks/darts_score_time.py
"""
import csv
import time
from pathlib import Path

import torch

from zico_fast.data import make_batches
from zico_fast.scorer import zico_score
from zico_fast.spaces.darts import DartsSpace

TABLE = Path(__file__).resolve().parents[1] / "zico_fast" / "data" / "nb301_dev.csv"


def main() -> None:
    torch.set_num_threads(1)
    rows = sorted(csv.DictReader(TABLE.open(newline="")), key=lambda r: float(r["naslib_flops"]))
    space, batches = DartsSpace(), make_batches(batch_size=128, num_batches=2, seed=0)
    space.build(rows[0]["arch_string"], seed=0)  # warm-up: first-call costs are not the build's
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        start = time.perf_counter()
        model = space.build(row["arch_string"], seed=0)
        built = time.perf_counter()
        score = zico_score(model, batches).score
        scored = time.perf_counter()
        print(f"arch_index {row['arch_index']:>4}  naslib_flops {float(row['naslib_flops']):6.1f} M  "
              f"build {built - start:6.3f} s  zico 2x128 {scored - built:6.2f} s  "
              f"build/zico {(built - start) / (scored - built):.4f}  score {score:.2f}")


if __name__ == "__main__":
    main()
