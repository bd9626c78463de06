"""Benchmark 3: peak memory of scoring vs a bare training step, each in a fresh process.

The timing is incidental; the numbers that matter are `peak_MB` (peak above the set-up level) and
its ratio to the bare forward/backward passes, printed in the summary table.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "peak_memory.py"


@pytest.mark.parametrize("mode", ["bare", "zico", "reference", "authors"])
@pytest.mark.parametrize("model_name", ["nb201-1.5M", "resnet18-11M"])
def test_peak_memory(benchmark, device, model_name, mode):
    batch_size = "128" if device == "cuda" else "64"
    result = {}

    def run():
        out = subprocess.run([sys.executable, str(SCRIPT), mode, model_name, device, batch_size],
                             check=True, capture_output=True, text=True).stdout
        result.update(json.loads(out.strip().splitlines()[-1]))

    benchmark.group = f"peak memory {device} {model_name}"
    benchmark.extra_info["baseline"] = mode == "bare"
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_MB"] = round(result["peak_above_setup_mb"], 1)
