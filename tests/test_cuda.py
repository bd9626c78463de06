"""CUDA kernels against the CPU kernels and the oracle; runs wherever a GPU and the CUDA build exist."""
import pytest
import torch

import zico_fast
from testing import GRAD_DTYPES, kernel_ratio_sums, oracle_ratio_sums, random_gradients
from zico_fast import _ops
from zico_fast.stats import NO_BAD_BATCH

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and zico_fast.has_cuda_kernels()),
                                reason="needs a GPU and a CUDA build of zico_fast")

# 8191 / 8193 straddle the CUDA chunk size, 3 is below one vector, 0 is empty.
SHAPES = [(3,), (8191,), (8193,), (0,), (33, 7), (64, 3, 3, 3)]


def flags_for(grads):
    return [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=grads[0].device) for _ in grads]


@pytest.mark.parametrize("dtype", GRAD_DTYPES)
def test_moments_equal_cpu_bit_for_bit(dtype):
    per_batch = random_gradients(SHAPES, 4, dtype=dtype, mean_over_std=50.0, seed=1)
    states = {}
    for device in ("cpu", "cuda"):
        batches = [[g.to(device) for g in b] for b in per_batch]
        moments = [[torch.empty(g.shape, device=device) for g in batches[0]] for _ in range(3)]
        flags = flags_for(batches[0])
        _ops.accumulate_(batches[1], batches[0], *moments, flags, 1, True)
        for n in (2, 3):
            _ops.accumulate_(batches[n], batches[0], *moments, flags, n, False)
        states[device] = [t.cpu() for group in moments for t in group]
    for cpu, cuda in zip(states["cpu"], states["cuda"]):
        assert torch.equal(cpu, cuda)


@pytest.mark.parametrize("dtype", GRAD_DTYPES)
@pytest.mark.parametrize("num_batches", [2, 3, 8])
def test_cuda_ratio_sums_match_cpu_and_oracle(dtype, num_batches):
    per_batch = random_gradients(SHAPES, num_batches, dtype=dtype, seed=num_batches)
    on_gpu = [[g.cuda() for g in b] for b in per_batch]
    for final in (True, False):
        gpu = kernel_ratio_sums(on_gpu, final)
        assert gpu == pytest.approx(kernel_ratio_sums(per_batch, final), rel=1e-12)
        assert gpu == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)


def test_unaligned_views_take_the_scalar_path():
    base = random_gradients([(10001,)], 3, seed=4, device="cuda")
    per_batch = [[b[0][1:]] for b in base]  # offset by one element: not 16-byte aligned
    assert kernel_ratio_sums(per_batch) == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)


def test_runs_on_the_current_stream():
    per_batch = random_gradients(SHAPES, 3, device="cuda", seed=6)
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            torch.ones(1, device="cuda").add_(1)  # a marker kernel on the side stream
            got = kernel_ratio_sums(per_batch)
            stream.synchronize()
    assert got == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ours = {e.device_resource_id for e in kernels if "ratio_kernel" in e.name or "accumulate_kernel" in e.name}
    markers = {e.device_resource_id for e in kernels if "elementwise" in e.name.lower() or "fill" in e.name.lower()}
    assert ours and ours <= markers


def test_graph_capture_is_refused_clearly():
    grads = random_gradients([(100,)], 2, device="cuda")
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="(?i)captur"):
        with torch.cuda.graph(graph):
            _ops.pair_ratio_sums(grads[0], grads[1], flags_for(grads[0]), 1)


def test_model_scores_match_on_cpu_and_gpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, groups=16), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    batches = [(torch.randn(16, 3, 12, 12), torch.randint(0, 10, (16,))) for _ in range(3)]
    model(batches[0][0])
    cpu = zico_fast.zico_score(model, batches).score
    gpu_batches = [(x.cuda(), y.cuda()) for x, y in batches]
    gpu = zico_fast.zico_score(model.cuda(), gpu_batches).score
    assert gpu == pytest.approx(cpu, rel=1e-4)  # cuDNN and CPU convolutions differ in rounding
