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


@torch.library.register_fake("zico_fast::accumulate_")
def _accumulate_fake(grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch, batch, initialize):
    return None


@torch.library.register_fake("zico_fast::ratio_sums")
def _ratio_sums_fake(sum_dev, sum_sq_dev, sum_abs, count):
    return sum_dev[0].new_empty((len(sum_dev),), dtype=torch.float64)


@torch.library.register_fake("zico_fast::pair_ratio_sums")
def _pair_ratio_sums_fake(first, second, bad_batch, batch):
    return second[0].new_empty((len(second),), dtype=torch.float64)
