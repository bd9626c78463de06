"""Benchmark session set-up: provenance header, devices, and side-by-side ratio tables at the end."""
import datetime
import platform
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `import workloads`

import zico_fast  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and zico_fast.has_cuda_kernels() else [])


def machine_description() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, {gpu}; "
            f"torch {torch.__version__}, python {platform.python_version()}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def pytest_report_header(config):
    return [f"zico_fast benchmarks on {machine_description()}", "command: " + " ".join(sys.argv)]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_terminal_summary(terminalreporter, config):
    """For every group, each benchmark's median against the group's `baseline` (extra_info)."""
    session = getattr(config, "_benchmarksession", None)
    if not session or not session.benchmarks:
        return
    groups = defaultdict(list)
    for bench in session.benchmarks:
        groups[bench.group].append(bench)
    write = terminalreporter.write_line
    write("")
    write(f"ratios (median time / median of the group's baseline) on {machine_description()}")
    for group, benches in sorted(groups.items(), key=lambda kv: str(kv[0])):
        base = [b for b in benches if b.extra_info.get("baseline")]
        base_median = base[0].stats.median if base else None
        write(f"  {group}")
        for bench in sorted(benches, key=lambda b: b.stats.median):
            ratio = f"{bench.stats.median / base_median:8.3f}x" if base_median else "        "
            if base and "peak_MB" in bench.extra_info:  # memory groups compare peaks, not times
                ratio = f"{bench.extra_info['peak_MB'] / max(base[0].extra_info['peak_MB'], 1e-9):8.3f}x peak"
            extra = "".join(f"  {k}={v}" for k, v in bench.extra_info.items() if k != "baseline")
            write(f"    {bench.name:<60} {bench.stats.median * 1e3:10.3f} ms {ratio}{extra}")
