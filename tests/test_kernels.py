"""The compiled ops against the float64 oracle, on fresh random gradients of awkward sizes."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from testing import DEVICES, GRAD_DTYPES, kernel_ratio_sums, oracle_ratio_sums, random_gradients
from zico_fast import _ops
from zico_fast.stats import NO_BAD_BATCH

# 1 and 3 are below a vector width, 4097 and 16385 cross CUDA and CPU chunk boundaries by one.
ODD_SHAPES = [(1,), (3,), (7, 5), (4097,), (16385,), (3, 3, 3, 3), (64, 1, 5, 5)]


def assert_close_to_oracle(per_batch, pair_is_final=False, rtol=1e-6):
    got = kernel_ratio_sums(per_batch, pair_is_final)
    want = oracle_ratio_sums(per_batch)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=rtol, abs=1e-300)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_batches", [2, 3, 8, 64])
def test_ratio_sums_match_oracle(device, num_batches):
    per_batch = random_gradients(ODD_SHAPES, num_batches, device=device, seed=num_batches)
    assert_close_to_oracle(per_batch)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_batches", [2, 3, 8, 64])
def test_large_mean_over_std_stays_accurate(device, num_batches):
    # Where ZiCo's ratios are large, naive float32 variance formulas lose 1e-4 and more.
    per_batch = random_gradients([(5000,), (257,)], num_batches, device=device, mean_over_std=1e4, seed=7)
    got = kernel_ratio_sums(per_batch)
    want = oracle_ratio_sums(per_batch)
    assert min(want) > 1e3 * 5000 / 10  # the ratios really are large
    for g, w in zip(got, want):
        assert math.log(g) == pytest.approx(math.log(w), rel=1e-6)
        assert g == pytest.approx(w, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", GRAD_DTYPES)
def test_half_precision_gradients(device, dtype):
    per_batch = random_gradients(ODD_SHAPES, 3, dtype=dtype, device=device, seed=3)
    assert_close_to_oracle(per_batch)
    assert_close_to_oracle(per_batch[:2], pair_is_final=True)


@pytest.mark.parametrize("device", DEVICES)
def test_pair_closed_form_equals_streaming_path(device):
    per_batch = random_gradients(ODD_SHAPES, 2, device=device, mean_over_std=100.0, seed=11)
    closed = kernel_ratio_sums(per_batch, pair_is_final=True)
    streaming = kernel_ratio_sums(per_batch, pair_is_final=False)
    assert closed == pytest.approx(streaming, rel=1e-6)  # float32 vs float64 sum of |g1|, |g2|
    assert_close_to_oracle(per_batch, pair_is_final=True)


@pytest.mark.parametrize("device", DEVICES)
def test_more_tensors_than_one_launch_holds(device):
    # PyTorch's CUDA foreach kernels take ~110 tensors per launch; the ops must take any number.
    shapes = [(1 + (i * 37) % 300,) for i in range(333)] + [(0,), (5, 0)]
    per_batch = random_gradients(shapes, 3, device=device, seed=5)
    assert_close_to_oracle(per_batch)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_std_elements_are_dropped(device):
    g1 = torch.tensor([1.0, 2.0, -3.0, 0.0, 5.0], device=device)
    g2 = torch.tensor([1.0, 4.0, -3.0, 0.0, 1.0], device=device)
    # elements 0, 2, 3 have std 0: dropped; 1: (2+4)/2 / 1 = 3; 4: (5+1)/2 / 2 = 1.5
    for final in (True, False):
        assert kernel_ratio_sums([[g1], [g2]], final) == pytest.approx([4.5], rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_gradients_follow_numpy_float32(device):
    # numpy's float32 squares of deviations below ~2.6e-23 underflow to 0: std 0, element dropped.
    dropped = torch.tensor([1e-30, 3e-30, 1e-25], device=device)
    kept = torch.tensor([1e-20, 3e-20, 1e-21], device=device)
    per_batch = [[dropped, kept], [dropped * 3, kept * 3]]
    stds = np.std(np.stack([[g.cpu().numpy() for g in b] for b in per_batch]), axis=0)
    assert (stds[0] == 0).all() and (stds[1] != 0).all()
    got = kernel_ratio_sums(per_batch)
    assert got[0] == 0.0
    # Squares below 1.2e-38 are float32 denormals (in numpy too): ~1e-4 relative precision there.
    assert got[1] == pytest.approx(oracle_ratio_sums(per_batch)[1], rel=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad_batch", [0, 1, 2])
def test_non_finite_gradient_flags_its_batch(device, bad_batch):
    per_batch = random_gradients([(10,), (20000,)], 3, device=device)
    per_batch[bad_batch][1][12345] = float("nan") if bad_batch != 1 else float("inf")
    flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in range(2)]
    moments = [[torch.empty(g.shape, device=device) for g in per_batch[0]] for _ in range(3)]
    _ops.accumulate_(per_batch[1], per_batch[0], *moments, flags, 1, True)
    _ops.accumulate_(per_batch[2], per_batch[0], *moments, flags, 2, False)
    assert [int(f) for f in flags] == [NO_BAD_BATCH, bad_batch]
    pair_flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in range(2)]
    _ops.pair_ratio_sums(per_batch[0], per_batch[1], pair_flags, 1)
    assert int(pair_flags[1]) == (bad_batch if bad_batch < 2 else NO_BAD_BATCH)


def test_bad_arguments_raise_clear_errors():
    g = [torch.randn(4)]
    flag = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32)]
    with pytest.raises(RuntimeError, match="has 2 tensors but the gradients have 1"):
        _ops.pair_ratio_sums([torch.randn(4), torch.randn(4)], g, flag, 1)
    with pytest.raises(RuntimeError, match="must be float32, float16 or bfloat16"):
        _ops.pair_ratio_sums([torch.zeros(4, dtype=torch.float64)], [torch.zeros(4, dtype=torch.float64)], flag, 1)
    with pytest.raises(RuntimeError, match="elements, expected"):
        _ops.pair_ratio_sums([torch.randn(5)], g, flag, 1)
    with pytest.raises(RuntimeError, match="same strides"):
        _ops.pair_ratio_sums([torch.randn(4, 4).t()], [torch.randn(4, 4)], flag, 1)
    with pytest.raises(RuntimeError, match="at least 2 samples"):
        _ops.ratio_sums(g, g, g, 1)


def test_init_weights_with_no_tensors_is_refused_in_cpp():
    # Both lists empty used to read constant[0] of an empty list (a segfault through torch.ops).
    # In a child process, so that a regression crashes the child, not the test session.
    code = ("import torch, zico_fast\n"
            "try:\n"
            "    torch.ops.zico_fast.init_weights_([], [], [], [], 0)\n"
            "except RuntimeError as error:\n"
            "    print(str(error).splitlines()[0])\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "init_weights_: both tensor lists are empty" in child.stdout


def _opcheck_samples(device):
    per_batch = random_gradients([(3, 5), (17,)], 2, device=device)
    moments = [[torch.zeros(g.shape, device=device) for g in per_batch[0]] for _ in range(3)]
    flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in range(2)]
    return [
        (torch.ops.zico_fast.accumulate_.default, (per_batch[1], per_batch[0], *moments, flags, 1, True)),
        (torch.ops.zico_fast.ratio_sums.default, (*[[m + 1 for m in group] for group in moments], 3)),
        (torch.ops.zico_fast.pair_ratio_sums.default, (per_batch[0], per_batch[1], flags, 1)),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for op, args in _opcheck_samples(device):
        torch.library.opcheck(op, args)


def test_ops_are_tagged_cudagraph_unsafe():
    # torch.compile(mode="reduce-overhead") must run them outside its CUDA graphs (see ops.cpp).
    for op in (torch.ops.zico_fast.accumulate_, torch.ops.zico_fast.ratio_sums, torch.ops.zico_fast.pair_ratio_sums):
        assert torch.Tag.cudagraph_unsafe in op.default.tags


def test_fake_kernels_reject_what_the_kernels_reject():
    # Under tracing only the fake kernels run: they must refuse bad arguments as eagerly as C++ does.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        g = [torch.empty(4)]
        flag = [torch.empty(1, dtype=torch.int32)]
        with pytest.raises(RuntimeError, match="elements, expected 4"):
            torch.ops.zico_fast.pair_ratio_sums([torch.empty(5)], g, flag, 1)
        with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
            torch.ops.zico_fast.pair_ratio_sums([torch.empty(4, dtype=torch.float64)],
                                                [torch.empty(4, dtype=torch.float64)], flag, 1)
        with pytest.raises(RuntimeError, match="bad_batch"):
            torch.ops.zico_fast.pair_ratio_sums(g, g, [torch.empty(1)], 1)
        with pytest.raises(RuntimeError, match="at least 2 samples"):
            torch.ops.zico_fast.ratio_sums(g, g, g, 1)
        with pytest.raises(RuntimeError, match="sum_abs must be torch.float32|sum_abs\\[0\\] must be"):
            torch.ops.zico_fast.accumulate_(g, g, g, g, [torch.empty(4, dtype=torch.float16)], flag, 1, True)
        assert torch.ops.zico_fast.ratio_sums(g, g, g, 3).dtype == torch.float64
