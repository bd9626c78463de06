"""A fixed-seed slice of scripts/fuzz.py (the 1,000-case runs and their summaries are committed in
benchmarks/results/fuzz_1000.json and fuzz_proxies_1000.json): random models scored and checked
against the float64 oracle, with the model compared before and after, and with every proxy."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fuzz  # noqa: E402
from zico_fast.proxies import ALL  # noqa: E402

# Cheap seeds that between them cover every model kind, a ZiCo user loop, restore on and off,
# NaN/inf inputs, an odd-sized DataLoader, repeated batches, half precision, and (318) a
# channels_last model with a strided 1x1 conv, which must not crash on the CPU (scored in NCHW, or
# refused by a scorer from before issue 24).
SEEDS = [0, 2, 6, 8, 15, 19, 117, 318]


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_case(seed):
    record = fuzz.run_case(seed)
    assert record["problems"] == [], record
    assert record["outcome"] in ("scored", "nonfinite_reported", "expected_error", "model_error")


# With every proxy (scripts/fuzz.py --proxies all; 1,000 cases in benchmarks/results/fuzz_proxies_1000.json):
# each kind, channels_last, bf16/fp16, NaN inputs (1, 8: ZiCo and ZiCo-BC NaN with their reason), an
# expected error (19), an NB201 cell that is an identity map (21: trainability NaN with its reason)
# and NaN inputs reaching trainability's SVD (180, which raised from values() before).
PROXY_SEEDS = [0, 1, 2, 3, 8, 10, 19, 21, 22, 24, 180, 318]


@pytest.mark.parametrize("seed", PROXY_SEEDS)
def test_fuzz_case_with_every_proxy(seed):
    record = fuzz.run_case(seed, ALL)
    assert record["problems"] == [], record
    assert record["outcome"] in ("scored", "nonfinite_reported", "expected_error")
    if seed == 21:
        assert record["reasons"] == {"trainability": "block 0 is an identity map (AZ-NAS scores it -inf)"}


@pytest.mark.slow
def test_cases_run_in_a_worker_process():
    """The path the 1,000-case run takes (a native crash there kills only the worker)."""
    records = fuzz.run(0, 2, progress=False)
    assert [r["seed"] for r in records] == [0, 1] and all(not r["problems"] for r in records)
