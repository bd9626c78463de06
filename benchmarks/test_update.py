"""Benchmark 1: the statistics update alone (no forward/backward), fused vs the baselines.

One round = N batches of gradients consumed plus the finalisation with its host sync, so
time / N is the per-batch cost. Baseline of each group: the pure-PyTorch reference.
"""
import functools

import pytest

from workloads import IMPLEMENTATIONS, MODELS, gradient_sets, run_statistics, weight_shapes


@functools.lru_cache(maxsize=None)
def shapes_of(model_name):
    return tuple(weight_shapes(MODELS[model_name]()))


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("num_batches", [2, 8])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_statistics_update(benchmark, device, model_name, num_batches, impl):
    shapes = shapes_of(model_name)
    grads = gradient_sets(shapes, device)
    numel = sum(s.numel() for s in shapes)
    benchmark.group = f"update {device} {model_name} N={num_batches}"
    benchmark.extra_info.update(baseline=impl == "reference", tensors=len(shapes), params=numel)
    rounds = 3 if numel > 50e6 and device == "cpu" else 10
    benchmark.pedantic(run_statistics, args=(impl, grads, num_batches, device), rounds=rounds, warmup_rounds=1)
