"""CUDA kernels against the CPU kernels and the oracle; runs wherever a GPU and the CUDA build exist.

Collected everywhere (CI checks that it imports), skipped without a GPU. Each test targets a bug a
multi-tensor CUDA kernel is likely to have: partial sums of huge tensors, misaligned vector loads,
layouts, a host-table race, cross-stream lifetimes, non-determinism, the wrong device.
"""
import pytest
import torch
import torch.nn.functional as F

import zico_fast
from testing import GRAD_DTYPES, kernel_ratio_sums, oracle_ratio_sums, random_gradients
from zico_fast import _ops
from zico_fast.reference import gradient_stacks, zico_oracle
from zico_fast.stats import NO_BAD_BATCH, GradientStatistics

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and zico_fast.has_cuda_kernels()),
                                reason="needs a GPU and a CUDA build of zico_fast")

# 4095 / 4097 straddle the CUDA chunk size (4,096), 8193 spans three chunks, 3 is below one vector, 0 is empty.
SHAPES = [(3,), (4095,), (4097,), (8193,), (0,), (33, 7), (64, 3, 3, 3)]


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


def moments_after(per_batch, device):
    """The (sum_dev, sum_sq_dev, sum_abs) moments of accumulate_ over per_batch, on device, as CPU tensors."""
    batches = [[g.to(device) for g in b] for b in per_batch]
    moments = [[torch.empty_like(g, dtype=torch.float32) for g in batches[0]] for _ in range(3)]  # same strides
    flags = flags_for(batches[0])
    _ops.accumulate_(batches[1], batches[0], *moments, flags, 1, True)
    for n in range(2, len(batches)):
        _ops.accumulate_(batches[n], batches[0], *moments, flags, n, False)
    return [t.cpu() for group in moments for t in group]


@pytest.mark.parametrize("dtype", GRAD_DTYPES)
def test_large_tensors_match_cpu_and_oracle(dtype):
    # 300k elements: 74 chunks per tensor; 10M: ~2,440 chunks, so each of sum_partials' 256
    # threads loops ~10 times and the vector loop, the tail and many blocks all run.
    per_batch = random_gradients([(300_001,), (10_000_003,)], 3, dtype=dtype, seed=2)
    for cpu, cuda in zip(moments_after(per_batch, "cpu"), moments_after(per_batch, "cuda")):
        assert torch.equal(cpu, cuda)
    on_gpu = [[g.cuda() for g in b] for b in per_batch]
    for final in (True, False):
        gpu = kernel_ratio_sums(on_gpu[:2] if final else on_gpu, final)
        cpu = kernel_ratio_sums(per_batch[:2] if final else per_batch, final)
        assert gpu == pytest.approx(cpu, rel=1e-12)
    assert kernel_ratio_sums(on_gpu) == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)


def shifted_copy(t, offset):
    """A copy of t starting `offset` elements into a fresh buffer: misaligned for offset % 8 != 0."""
    buffer = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    view = buffer[offset:]
    view.copy_(t.reshape(-1))
    return view


@pytest.mark.parametrize("dtype", GRAD_DTYPES)
@pytest.mark.parametrize("misaligned", ["grads", "shifts", "moments"])
@pytest.mark.parametrize("offset", [1, 2, 4])
def test_one_misaligned_list_matches_cpu(dtype, misaligned, offset):
    # offset 4 of a half tensor is 8-byte aligned but not 16: a kernel that checked alignment for
    # 8-byte loads while issuing 16-byte ones would fault (or read the wrong elements) here.
    per_batch = random_gradients([(4099,), (8192 * 3 + 5,)], 3, dtype=dtype, seed=offset)
    want = moments_after([[g.reshape(-1) for g in b] for b in per_batch], "cpu")
    gpu = [[g.cuda().reshape(-1) for g in b] for b in per_batch]
    if misaligned in ("grads", "shifts"):
        which = slice(1, 3) if misaligned == "grads" else slice(0, 1)
        gpu[which] = [[shifted_copy(g, offset) for g in b] for b in gpu[which]]
    moments = [[torch.empty(g.numel(), device="cuda") for g in gpu[0]] for _ in range(3)]
    if misaligned == "moments":
        moments[1] = [shifted_copy(m, offset) for m in moments[1]]
    flags = flags_for(gpu[0])
    _ops.accumulate_(gpu[1], gpu[0], *moments, flags, 1, True)
    _ops.accumulate_(gpu[2], gpu[0], *moments, flags, 2, False)
    for cpu, cuda in zip(want, [t.cpu() for group in moments for t in group]):
        assert torch.equal(cpu, cuda)
    pair = _ops.pair_ratio_sums(gpu[0], gpu[1], flags_for(gpu[0]), 1).tolist()
    assert pair == pytest.approx(oracle_ratio_sums(per_batch[:2]), rel=1e-6)
    assert _ops.ratio_sums(*moments, 3).tolist() == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)


@pytest.mark.parametrize("dtype", GRAD_DTYPES)
def test_channels_last_gradients_at_op_level(dtype):
    shapes = [(32, 16, 3, 3), (8, 3, 5, 5)]
    per_batch = [[g.to(memory_format=torch.channels_last) for g in b]
                 for b in random_gradients(shapes, 3, dtype=dtype, seed=8)]
    assert not per_batch[0][0].is_contiguous()
    for cpu, cuda in zip(moments_after(per_batch, "cpu"), moments_after(per_batch, "cuda")):
        assert cuda.stride() == cpu.stride() and torch.equal(cpu, cuda)
    on_gpu = [[g.cuda() for g in b] for b in per_batch]
    assert kernel_ratio_sums(on_gpu) == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)
    contiguous_moments = [[torch.empty(g.shape, device="cuda") for g in on_gpu[0]] for _ in range(3)]
    with pytest.raises(RuntimeError, match="same strides"):
        _ops.accumulate_(on_gpu[1], on_gpu[0], *contiguous_moments, flags_for(on_gpu[0]), 1, True)


def test_back_to_back_calls_behind_a_busy_stream():
    # Every call uploads its own launch table through pinned host memory. With the stream held
    # up, all 40 uploads are queued before any runs: a host buffer reused too early would hand a
    # later call's table (other sizes, other pointers) to an earlier kernel.
    cases = [random_gradients([(1 + 997 * i,), (4096 * (i % 5) + 3,)], 2, seed=100 + i) for i in range(40)]
    on_gpu = [[[g.cuda() for g in b] for b in case] for case in cases]
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time ahead of everything below
    results = [_ops.pair_ratio_sums(case[0], case[1], flags_for(case[0]), 1) for case in on_gpu]
    torch.cuda.synchronize()
    for case, got in zip(cases, results):
        assert got.tolist() == pytest.approx(kernel_ratio_sums(case, pair_is_final=True), rel=1e-12)


def test_gradients_made_on_a_side_stream():
    # As in an autograd hook, gradients are handed over on the stream that makes them (a side
    # stream) and consumed later on the current one. Even batches: the producer is still busy at
    # hand-over, so the consumer must wait for it. Odd batches: the consumer is busy while the
    # side stream, once the gradients are dropped, reuses their memory for NaN garbage at once,
    # so they must be record_stream'ed onto the consumer.
    per_batch = random_gradients([(70_001,), (3, 3, 16, 16)], 5, seed=12)
    sources = [[g.cuda() for g in b] for b in per_batch]
    stats = GradientStatistics(2)
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    for n, batch in enumerate(sources):
        with torch.cuda.stream(side):
            if n % 2 == 0:
                torch.cuda._sleep(20_000_000)
            grads = [g * 1.0 for g in batch]
            for i, g in enumerate(grads):
                stats.add(i, g)
        del grads
        if n % 2 == 1:
            torch.cuda._sleep(20_000_000)
        stats.end_batch()
        with torch.cuda.stream(side):
            garbage = [torch.full_like(g, float("nan")) for g in batch]
        del garbage
    got = stats.ratio_sums([0, 1]).tolist()
    assert got == pytest.approx(oracle_ratio_sums(per_batch), rel=1e-6)


def test_results_are_bitwise_deterministic():
    per_batch = random_gradients([(3_000_017,), (5,), (4096,)] + [(300,)] * 200, 3, seed=13)
    on_gpu = [[g.cuda() for g in b] for b in per_batch]

    def run():
        moments = [[torch.empty_like(g, dtype=torch.float32) for g in on_gpu[0]] for _ in range(3)]
        _ops.accumulate_(on_gpu[1], on_gpu[0], *moments, flags_for(on_gpu[0]), 1, True)
        _ops.accumulate_(on_gpu[2], on_gpu[0], *moments, flags_for(on_gpu[0]), 2, False)
        return _ops.ratio_sums(*moments, 3), _ops.pair_ratio_sums(on_gpu[0], on_gpu[1], flags_for(on_gpu[0]), 1)

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a.view(torch.int64), b.view(torch.int64))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_the_second_gpu():
    per_batch = random_gradients([(9000,), (3, 3, 3, 3)], 3, seed=14)
    with torch.cuda.device(0):  # the current device is not the tensors' one
        on_gpu1 = [[g.to("cuda:1") for g in b] for b in per_batch]
        sums = kernel_ratio_sums(on_gpu1)
        pair = _ops.pair_ratio_sums(on_gpu1[0], on_gpu1[1], flags_for(on_gpu1[0]), 1)
    assert pair.device == torch.device("cuda:1")
    assert sums == pytest.approx(kernel_ratio_sums(per_batch), rel=1e-12)


@pytest.mark.parametrize("num_batches", [2, 3])
def test_model_score_on_gpu_equals_oracle_of_its_gradients(num_batches):
    # N = 2 takes the closed form, N = 3 the moments. The oracle gets the very gradients the GPU
    # produced (deterministic cuDNN), so the comparison is exact up to float64 summation order.
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).cuda()
    batches = [(torch.randn(32, 3, 12, 12, device="cuda"), torch.randint(0, 10, (32,), device="cuda"))
               for _ in range(num_batches)]
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        got = zico_fast.zico_score(model, batches).score
        want, _ = zico_oracle(gradient_stacks(model, batches))
    finally:
        torch.backends.cudnn.deterministic = deterministic
    assert got == pytest.approx(want, rel=1e-6)


def test_backward_on_a_side_stream_with_zico_attached():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).cuda()
    batches = [(torch.randn(16, 64, device="cuda"), torch.randint(0, 10, (16,), device="cuda")) for _ in range(3)]
    want, _ = zico_oracle(gradient_stacks(model, batches))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with zico_fast.ZiCo(model, release_grads=True) as zico, torch.cuda.stream(side):
        for x, y in batches:
            torch.cuda._sleep(10_000_000)
            F.cross_entropy(model(x), y).backward()
    torch.cuda.current_stream().wait_stream(side)
    assert zico.result().score == pytest.approx(want, rel=1e-6)


def test_reduce_overhead_compile_runs_around_the_ops():
    # The ops are tagged cudagraph_unsafe: inductor keeps them out of its CUDA graphs instead of
    # capturing them (which they refuse) and failing.
    moments = [[torch.rand(5000, device="cuda") + 1.0] for _ in range(3)]

    @torch.compile(mode="reduce-overhead")
    def score(d, s, a):
        return torch.ops.zico_fast.ratio_sums([d * 0.5], [s * 2.0], [a], 3) + 1.0

    eager = torch.ops.zico_fast.ratio_sums([moments[0][0] * 0.5], [moments[1][0] * 2.0], moments[2], 3) + 1.0
    for _ in range(3):  # warm-up, recording, replay
        assert torch.equal(score(moments[0][0], moments[1][0], moments[2][0]), eager)
