"""Named NVTX ranges for Nsight: real ranges when an NVTX library is present, no-ops otherwise."""
import contextlib

try:  # the `nvtx` package works without a GPU (ranges cost well under a microsecond)
    import nvtx as _nvtx
except ImportError:  # pragma: no cover - depends on the environment
    _nvtx = None

import torch

_CUDA_NVTX = torch.version.cuda is not None  # torch.cuda.nvtx raises on CPU builds of torch


@contextlib.contextmanager
def nvtx_range(name: str):
    """`with nvtx_range("zico/backward"):` shows up as a named range in Nsight Systems."""
    if _nvtx is not None:
        with _nvtx.annotate(name):  # default domain, like the C++ ranges
            yield
    elif _CUDA_NVTX:
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        yield
