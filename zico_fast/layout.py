"""The memory layout the passes run in: the engine's measured choice per space and device, and the
torch CPU conv defect that the scorer steers around by converting to contiguous where it must.

The defect (torch 2.13 CPU, oneDNN 3.12; scripts/conv_layout_probe.py, table in
benchmarks/results/conv_layout_probe.txt): oneDNN's 1x1 weight-gradient kernel (jit_1x1, AVX2 and
AVX-512 alike) writes past its buffers for a Conv2d with a 1x1 kernel, stride > 1 and groups 1 whose
input channels fill less than one vector register (< 8 with AVX2, < 16 with AVX-512), when the input
or the weight is channels_last. The heap is corrupted and the process dies, at once or later (glibc
abort, segfault), or the gradient is wrong; small images often survive, 64 px and up rarely do.
NCHW tensors take another kernel and are safe. Only torch 2.13's CPU build was tested (the GPU
machine's torch 2.11 and cuDNN could not be: no GPU was lent), so the guard holds for every torch.
"""
from __future__ import annotations

import torch
from torch import nn

LAYOUTS = ("channels_last", "contiguous")

# The engine's layout per (space, device type) for `--layout auto`, from benchmarks/layout.py
# (benchmarks/results/layout_cpu.txt and layout_cpu_darts_sss.txt: both layouts timed side by side).
# A space or device not measured keeps contiguous, the layout every network is built in.
MEASURED = {("nb201", "cpu"): "channels_last", ("nb101", "cpu"): "channels_last",
            ("mobilenet", "cpu"): "channels_last", ("darts", "cpu"): "channels_last",
            ("sss", "cpu"): "channels_last"}


def hits_cpu_conv_defect(module: nn.Module) -> bool:
    """A conv of the shape whose CPU weight gradient is corrupt in channels_last (module docstring),
    for the widest x86 vectors (16 floats), so the layout a model is scored in never depends on the
    machine. Any padding and dtype: padded and half-precision ones ran clean, but cost nothing to guard."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and max(module.stride) > 1
            and module.groups == 1 and module.in_channels < 16)


def is_channels_last(tensor: torch.Tensor) -> bool:
    """A 4-D tensor in channels_last strides (one with C == 1 or H == W == 1 is both: not counted)."""
    return tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(
        memory_format=torch.channels_last)


def nchw_strides(shape) -> tuple[int, ...]:
    """The strides of a contiguous (NCHW) tensor of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def choose_layout(requested: str, space_name: str | None, device) -> str:
    """The layout to score in: `requested` unless it is "auto", then the measured one (MEASURED)."""
    if requested != "auto":
        if requested not in LAYOUTS:
            raise ValueError(f"layout must be 'auto', 'channels_last' or 'contiguous', not {requested!r}")
        return requested
    return MEASURED.get((space_name, torch.device(device).type), "contiguous")


def with_layout(batches: list, layout: str) -> list:
    """`batches` with 4-D inputs in `layout` (other inputs, and targets, as they are)."""
    form = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return [(x.contiguous(memory_format=form) if x.dim() == 4 else x, y) for x, y in batches]


def layout_of(batches) -> str:
    """"channels_last" when the first batch's inputs are, else "contiguous" (what the record names)."""
    return "channels_last" if is_channels_last(next(iter(batches))[0]) else "contiguous"
