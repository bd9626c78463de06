"""A fixed-seed slice of scripts/fuzz.py (the 1,000-case run and its summary are committed in
benchmarks/results/fuzz_1000.json): random models scored and checked against the float64 oracle,
with the model compared before and after."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fuzz  # noqa: E402

# Cheap seeds that between them cover every model kind, a ZiCo user loop, restore on and off,
# NaN/inf inputs, an odd-sized DataLoader, repeated batches, half precision, and (318) a
# channels_last model with a strided 1x1 conv, which must be refused on the CPU, not crash.
SEEDS = [0, 2, 6, 8, 15, 19, 117, 318]


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_case(seed):
    record = fuzz.run_case(seed)
    assert record["problems"] == [], record
    assert record["outcome"] in ("scored", "nonfinite_reported", "expected_error", "model_error")


@pytest.mark.slow
def test_cases_run_in_a_worker_process():
    """The path the 1,000-case run takes (a native crash there kills only the worker)."""
    records = fuzz.run(0, 2, progress=False)
    assert [r["seed"] for r in records] == [0, 1] and all(not r["problems"] for r in records)
