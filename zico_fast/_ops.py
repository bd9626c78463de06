"""Python handles to the compiled zico_fast ops, with fake kernels for torch.compile and opcheck."""
import torch

from zico_fast import _C  # noqa: F401  (registers the ops)

_ops = torch.ops.zico_fast


def has_cuda_kernels() -> bool:
    """True when this build of the extension holds the CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("zico_fast::ratio_sums", "CUDA")


def accumulate_(grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch, batch: int, initialize: bool) -> None:
    """Adds one batch of gradients to the shifted moments in place (see csrc/ops.cpp)."""
    _ops.accumulate_(grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch, batch, initialize)


def ratio_sums(sum_dev, sum_sq_dev, sum_abs, count: int) -> torch.Tensor:
    """Per tensor, float64 sum of mean|g|/std(g) over the kept elements after `count` samples."""
    return _ops.ratio_sums(sum_dev, sum_sq_dev, sum_abs, count)


def pair_ratio_sums(first, second, bad_batch, batch: int) -> torch.Tensor:
    """The N = 2 closed form of ratio_sums, straight from the two gradients."""
    return _ops.pair_ratio_sums(first, second, bad_batch, batch)


# The fake kernels check what the C++ checks (csrc/launch_plan.h) as far as metadata allows, so a
# traced or compiled call fails at trace time with the same kind of message as an eager one.
_GRAD_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_group(op, what, like, group, dtype=None):
    torch._check(len(group) == len(like),
                 lambda: f"{op}: {what} has {len(group)} tensors but the gradients have {len(like)}")
    for i, (t, ref) in enumerate(zip(group, like)):
        torch._check(t.device == like[0].device,
                     lambda: f"{op}: {what}[{i}] is on {t.device} but the gradients are on {like[0].device}")
        torch._check(t.numel() == ref.numel(),
                     lambda: f"{op}: {what}[{i}] has {t.numel()} elements, expected {ref.numel()}")
        torch._check(t.stride() == ref.stride(),
                     lambda: f"{op}: {what}[{i}] must have the same strides as its gradient")
        torch._check(dtype is None or t.dtype == dtype,
                     lambda: f"{op}: {what}[{i}] must be {dtype}, got {t.dtype}")


def _check_gradients(op, grads, bad_batch=None):
    torch._check(len(grads) > 0, lambda: f"{op}: expected at least one gradient tensor")
    torch._check(grads[0].dtype in _GRAD_DTYPES,
                 lambda: f"{op}: gradients must be float32, float16 or bfloat16, got {grads[0].dtype}")
    _check_group(op, "gradients", grads, grads, grads[0].dtype)
    if bad_batch is not None:
        torch._check(len(bad_batch) == len(grads),
                     lambda: f"{op}: bad_batch has {len(bad_batch)} tensors but the gradients have {len(grads)}")
        for i, flag in enumerate(bad_batch):
            torch._check(flag.numel() == 1 and flag.dtype == torch.int32 and flag.device == grads[0].device,
                         lambda: f"{op}: bad_batch[{i}] must be a one-element int32 tensor on {grads[0].device}")


@torch.library.register_fake("zico_fast::accumulate_")
def _accumulate_fake(grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch, batch, initialize):
    op = "zico_fast::accumulate_"
    _check_gradients(op, grads, bad_batch)
    _check_group(op, "shifts", grads, shifts, grads[0].dtype)
    for name, group in (("sum_dev", sum_dev), ("sum_sq_dev", sum_sq_dev), ("sum_abs", sum_abs)):
        _check_group(op, name, grads, group, torch.float32)
    return None


@torch.library.register_fake("zico_fast::ratio_sums")
def _ratio_sums_fake(sum_dev, sum_sq_dev, sum_abs, count):
    op = "zico_fast::ratio_sums"
    torch._check(count >= 2, lambda: f"{op}: need at least 2 samples, got {count}")
    torch._check(len(sum_dev) > 0, lambda: f"{op}: expected at least one tensor")
    for name, group in (("sum_dev", sum_dev), ("sum_sq_dev", sum_sq_dev), ("sum_abs", sum_abs)):
        _check_group(op, name, sum_dev, group, torch.float32)
    return sum_dev[0].new_empty((len(sum_dev),), dtype=torch.float64)


@torch.library.register_fake("zico_fast::pair_ratio_sums")
def _pair_ratio_sums_fake(first, second, bad_batch, batch):
    op = "zico_fast::pair_ratio_sums"
    _check_gradients(op, second, bad_batch)
    _check_group(op, "first", second, first, second[0].dtype)
    return second[0].new_empty((len(second),), dtype=torch.float64)


def init_weights_(uniform, bounds, constant, values, seed: int) -> None:
    """uniform[i] <- U[-bounds[i], bounds[i]) drawn in list order from the MT19937 stream that
    torch.manual_seed(seed) starts (the same bits as Tensor.uniform_ after it; the global generator
    is not touched), constant[i] <- values[i]. Tensors contiguous, on one device; see
    csrc/init_weights.cpp."""
    if uniform or constant:
        _ops.init_weights_(uniform, bounds, constant, values, seed)
