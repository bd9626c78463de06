"""The steady-state fused update (one batch into existing moments) as achieved memory bandwidth.

Each element of a batch-n update (n >= 3) reads the gradient, the shift and three float32 moments
and writes the three moments back. The group baseline is a device-to-device copy moving the same
number of bytes (read + write), so the printed ratio is the fraction of copy bandwidth reached;
`foreach` is the same update with torch._foreach_* ops.
"""
import functools

import pytest
import torch

from workloads import MODELS, gradient_sets, weight_shapes
from zico_fast import _ops
from zico_fast.reference import ForeachStatistics
from zico_fast.stats import NO_BAD_BATCH


@functools.lru_cache(maxsize=None)
def shapes_of(model_name):
    return tuple(weight_shapes(MODELS[model_name]()))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["fused", "foreach", "copy"])
@pytest.mark.parametrize("model_name", ["nb201-1.5M", "resnet18-11M", "linear-100M"])
def test_update_bandwidth(benchmark, device, model_name, impl):
    grads, shifts = gradient_sets(shapes_of(model_name), device)
    numel = sum(g.numel() for g in grads)
    moved = numel * (2 * grads[0].element_size() + 6 * 4)  # bytes read + written per update
    if impl == "fused":
        moments = [[torch.zeros_like(g) for g in grads] for _ in range(3)]
        flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in grads]

        def step():
            _ops.accumulate_(grads, shifts, *moments, flags, 2, False)
            sync(device)
    elif impl == "foreach":
        stats = ForeachStatistics()
        stats.update(shifts)
        stats.update(grads)

        def step():
            stats.update(grads)
            sync(device)
    else:
        src = torch.empty(moved // 2, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)

        def step():
            dst.copy_(src)
            sync(device)

    benchmark.group = f"update bandwidth {device} {model_name}"
    benchmark.extra_info.update(baseline=impl == "copy", params=numel)
    benchmark.pedantic(step, rounds=20 if numel < 50e6 or device == "cuda" else 5, warmup_rounds=2)
    benchmark.extra_info["GB/s"] = round(moved / benchmark.stats.stats.median / 1e9, 1)
