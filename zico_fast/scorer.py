"""The public API: `zico_score` for one call, `ZiCo` for users who run their own training loop."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.layers import LayerSelector, select_layers
from zico_fast.model_state import ModelState
from zico_fast.nvtx import nvtx_range
from zico_fast.stats import NO_BAD_BATCH, GradientStatistics


@dataclass
class ZiCoResult:
    score: float  # sum of the layer terms; NaN when nonfinite="nan" met a non-finite gradient
    layer_terms: dict[str, float]  # log(sum over kept elements of mean|g|/std(g)), per scored layer
    skipped: dict[str, str] = field(default_factory=dict)  # layer name -> why it is not in the score
    num_batches: int = 0


class NonFiniteGradientError(FloatingPointError):
    """A gradient of a scored layer held inf or NaN (pass nonfinite="nan" to get a NaN score instead)."""


class ZiCo:
    """Accumulates ZiCo statistics from the backward passes the caller runs.

    >>> with ZiCo(model) as zico:
    ...     for x, y in batches:
    ...         F.cross_entropy(model(x), y).backward()
    >>> zico.result().score

    Run one backward per batch. Gradients are consumed in post-accumulate-grad hooks; with
    release_grads=True (default) each scored weight's `.grad` is set to None once consumed, so the
    next backward starts from zero without a zero_grad() and memory stays at a training step's.
    With release_grads=False, `.grad` is left in place and the caller must zero it between batches.
    `num_batches=2` lets the last batch use the closed form (no moments stored at all).
    """

    def __init__(self, model: nn.Module, layers: LayerSelector = None, *, num_batches: int | None = None,
                 release_grads: bool = True, nonfinite: str = "raise", bucket_mb: float = 25.0):
        if nonfinite not in ("raise", "nan"):
            raise ValueError(f"nonfinite must be 'raise' or 'nan', not {nonfinite!r}")
        if num_batches is not None and num_batches < 2:
            raise ValueError(f"ZiCo needs at least 2 batches (it measures gradient spread), got num_batches={num_batches}")
        self.model = model
        self.layers, self._skipped = select_layers(model, layers)
        self.release_grads = release_grads
        self.nonfinite = nonfinite
        self.stats = GradientStatistics(len(self.layers), int(bucket_mb * 2**20), num_batches)
        self._handles: list = []
        self._callback_queued = False

    def attach(self) -> "ZiCo":
        if self._handles:
            raise RuntimeError("this ZiCo is already attached")
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.weight.register_post_accumulate_grad_hook(self._hook(index)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "ZiCo":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def consume(weight: torch.Tensor) -> None:
            if not self._callback_queued:
                # Runs once the whole backward is done: consume the last bucket, next batch.
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
                self._callback_queued = True
            grad = weight.grad
            if self.release_grads:
                weight.grad = None  # we hold the only reference now; it dies once consumed
            elif self.stats.count[index] == 0:
                grad = grad.clone()  # the caller's zero_grad() would otherwise overwrite our shift
            self.stats.add(index, grad)

        return consume

    def _end_of_backward(self) -> None:
        with nvtx_range("zico/statistics"):
            self.stats.end_batch()
        self._callback_queued = False

    def result(self) -> ZiCoResult:
        """Finalises on the device and copies the per-layer terms to the host in one sync."""
        n = self.stats.batch
        if n < 2:
            raise ValueError(f"ZiCo needs gradients from at least 2 batches, got {n}; run more batches")
        skipped = dict(self._skipped)
        scored = []
        for index, layer in enumerate(self.layers):
            count = self.stats.count[index]
            if count == 0:
                skipped[layer.name] = "unused: no gradient reached its weight"
            elif count != n:
                skipped[layer.name] = f"received a gradient in only {count} of {n} batches"
            else:
                scored.append(index)
        if not scored:
            raise ValueError("no scored layer received a gradient in every batch: " + "; ".join(
                f"{k}: {v}" for k, v in skipped.items()))
        with nvtx_range("zico/finalize"):
            sums = self.stats.ratio_sums(scored)
            device = sums[scored[0]].device
            ratio_sums = torch.stack([sums[i].to(device) for i in scored])
            terms = torch.where(ratio_sums > 0, ratio_sums.log(), torch.zeros_like(ratio_sums))
            bad = self.stats.bad_batches(scored, device).to(torch.float64)
            score = terms.sum().reshape(1)
            host = torch.cat([score, terms, ratio_sums, bad]).cpu().tolist()  # the one host sync
        k = len(scored)
        score, terms_h, sums_h, bad_h = host[0], host[1:k + 1], host[k + 1:2 * k + 1], host[2 * k + 1:]
        layer_terms: dict[str, float] = {}
        has_nonfinite = False
        for index, term, total, bad_batch in zip(scored, terms_h, sums_h, bad_h):
            name = self.layers[index].name
            if bad_batch != NO_BAD_BATCH or not math.isfinite(total):
                if self.nonfinite == "raise":
                    where = f"batch {int(bad_batch)}" if bad_batch != NO_BAD_BATCH else "its statistics"
                    raise NonFiniteGradientError(
                        f"layer {name!r} has a non-finite gradient (inf or NaN) in {where}; check the "
                        "inputs and loss, or pass nonfinite='nan' to get a NaN score instead")
                has_nonfinite = True
            if total > 0:
                layer_terms[name] = term
            else:
                skipped[name] = "every element has zero gradient std (contributes nothing)"
        return ZiCoResult(math.nan if has_nonfinite else score, layer_terms, skipped, n)


def zico_score(model: nn.Module, batches: Iterable, loss_fn: Callable = F.cross_entropy, *,
               layers: LayerSelector = None, restore: bool = True, release_grads: bool = True,
               nonfinite: str = "raise", bucket_mb: float = 25.0) -> ZiCoResult:
    """ZiCo score of `model` on `batches` (any iterable of (inputs, targets), e.g. a DataLoader).

    The authors' protocol: train mode, and per batch a forward, `loss_fn(logits, targets)` (mean
    cross-entropy by default) and a backward from zeroed gradients. With restore=True (default)
    the model is handed back exactly as found: parameters, buffers (BN running statistics), .grad,
    train/eval mode, no hooks. restore=False skips that bookkeeping for models thrown away after.
    """
    saved = ModelState.capture(model) if restore else None
    try:
        model.zero_grad(set_to_none=True)
        model.train()
        zico = ZiCo(model, layers, release_grads=release_grads, nonfinite=nonfinite, bucket_mb=bucket_mb)
        device = zico.layers[0].weight.device
        with zico:
            for index, (inputs, targets), is_last in _with_last_flag(batches):
                _check_batch(index, inputs, targets, device)
                if is_last and index == 1:
                    zico.stats.num_batches = 2  # N = 2 known now: the last batch uses the closed form
                with nvtx_range("zico/forward"):
                    loss = loss_fn(model(inputs), targets)
                with nvtx_range("zico/backward"):
                    loss.backward()
                model.zero_grad(set_to_none=True)  # the unscored parameters' grads (biases, BN)
            return zico.result()
    finally:
        if saved is not None:
            saved.restore(model)


def _with_last_flag(batches: Iterable):
    """Yields (index, batch, is_last), looking one batch ahead."""
    iterator = iter(batches)
    try:
        current = next(iterator)
    except StopIteration:
        raise ValueError("batches is empty; ZiCo needs at least 2 batches of (inputs, targets)") from None
    index = 0
    for upcoming in iterator:
        yield index, current, False
        current, index = upcoming, index + 1
    yield index, current, True


def _check_batch(index: int, inputs, targets, device: torch.device) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(f"batch {index}: expected a pair of tensors (inputs, targets), got "
                        f"({type(inputs).__name__}, {type(targets).__name__})")
    if inputs.shape[0] == 0:
        raise ValueError(f"batch {index} is empty; every batch needs at least one sample")
    for what, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor.device != device:
            raise ValueError(f"batch {index}: {what} are on {tensor.device} but the model is on {device}; "
                             f"move the batches with .to({str(device)!r})")
