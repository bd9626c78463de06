"""Turning what the user hands `zico_score` into checked (inputs, targets) and logits, with one
clear message, naming the way out, for each way that can go wrong."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from zico_fast.errors import ZiCoUserError
from zico_fast.layout import nchw_strides


def checked_batches(batches: Iterable, unpack_batch: Callable | None, device: torch.device,
                    nchw: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, bool]]:
    """Yields (index, inputs, targets, is_last), looking one batch ahead. Inputs keep the caller's
    memory layout (the passes are fastest in it), unless `nchw`: then 4-D inputs come out in NCHW
    strides (for a model that hits torch's CPU channels_last defect, see zico_fast.layout)."""
    iterator = iter(batches)
    try:
        current = next(iterator)
    except StopIteration:
        raise ZiCoUserError("batches is empty; ZiCo needs at least 2 batches of (inputs, targets)") from None
    index, previous = 0, None
    while True:
        try:
            upcoming, is_last = next(iterator), False
        except StopIteration:
            upcoming, is_last = None, True
        inputs, targets = _unpack(index, current, unpack_batch)
        _check(index, inputs, targets, device)
        if previous is not None and inputs is previous:
            raise ZiCoUserError(
                f"batch {index} is the same inputs tensor as batch {index - 1}: ZiCo measures how gradients "
                "vary between batches, so repeated batches say nothing; pass distinct batches")
        previous = inputs
        if nchw and inputs.dim() == 4 and inputs.stride() != nchw_strides(inputs.shape):
            inputs = inputs.clone(memory_format=torch.contiguous_format)
        yield index, inputs, targets, is_last
        if is_last:
            return
        current, index = upcoming, index + 1


def _unpack(index: int, batch: Any, unpack_batch: Callable | None) -> tuple[Any, Any]:
    if unpack_batch is not None:
        batch = unpack_batch(batch)
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], batch[1]
        raise ZiCoUserError(f"unpack_batch returned a {type(batch).__name__}; it must return (inputs, targets)")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, (tuple, list)):
        raise ZiCoUserError(
            f"batch {index} is a {type(batch).__name__} of {len(batch)} items, not (inputs, targets); pick "
            "them with unpack_batch, e.g. zico_score(..., unpack_batch=lambda b: (b[0], b[1]))")
    if isinstance(batch, Mapping):
        keys = list(batch)[:6]
        raise ZiCoUserError(
            f"batch {index} is a {type(batch).__name__} with keys {keys}, not (inputs, targets); pick them "
            "with unpack_batch, e.g. zico_score(..., unpack_batch=lambda b: (b['image'], b['label']))")
    raise ZiCoUserError(f"batch {index} is a {type(batch).__name__}, not a pair (inputs, targets); batches must "
                        "be an iterable of (inputs, targets), or pass unpack_batch=<batch -> (inputs, targets)>")


def _check(index: int, inputs, targets, device: torch.device) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(f"batch {index}: expected a pair of tensors (inputs, targets), got "
                        f"({type(inputs).__name__}, {type(targets).__name__})")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ZiCoUserError(f"batch {index} is empty; every batch needs at least one sample")
    for what, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor.device != device:
            raise ZiCoUserError(f"batch {index}: {what} are on {tensor.device} but the model is on {device}; "
                             f"move the batches with .to({str(device)!r})")


def logits_of(output: Any, select_output: Callable | None, loss_fn: Callable, index: int) -> torch.Tensor:
    """The tensor to hand loss_fn, or a clear error when the model's output is not one."""
    if select_output is not None:
        output = select_output(output)
    if isinstance(output, torch.Tensor):
        if loss_fn is F.cross_entropy and output.dim() >= 2 and output.shape[1] == 1:
            raise ZiCoUserError(
                "the model gives one output per sample, so cross-entropy (the default loss_fn) is constant "
                "and every gradient is 0; for a regression model pass loss_fn=F.mse_loss")
        return output
    if isinstance(output, Mapping):
        raise ZiCoUserError(
            f"the model returned a {type(output).__name__} with keys {list(output)[:6]}, not a logits tensor; "
            "pick the logits with select_output, e.g. zico_score(..., select_output=lambda out: out['logits'])")
    if isinstance(output, (tuple, list)):
        raise ZiCoUserError(
            f"the model returned a {type(output).__name__} of {len(output)} items, not a logits tensor; pick "
            "the logits with select_output, e.g. zico_score(..., select_output=lambda out: out[0])")
    raise ZiCoUserError(f"the model returned a {type(output).__name__}, not a tensor of logits; pass "
                        "select_output=<model output -> logits tensor>")


def scalar_loss(loss: Any, index: int) -> torch.Tensor:
    """loss_fn's value for batch `index`, refused with a clear error unless it is one number to backpropagate."""
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ZiCoUserError(f"loss_fn must return a scalar tensor, got {shape} for batch {index}; reduce it "
                            "(e.g. reduction='mean', as the default F.cross_entropy does)")
    return loss
