"""The public API: `zico_score` for one call, `ZiCo` for users who run their own training loop."""
from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.batches import checked_batches, logits_of, scalar_loss
from zico_fast.errors import ZiCoUserError
from zico_fast.layers import LayerSelector, SelectedLayer, select_layers
from zico_fast.model_state import model_plan
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


class ZeroSpreadWarning(UserWarning):
    """Every scored layer had zero gradient spread over the batches, so the score is 0."""


class ZiCo:
    """Accumulates ZiCo statistics from the backward passes the caller runs.

    >>> with ZiCo(model) as zico:
    ...     for x, y in batches:
    ...         optimizer.zero_grad()
    ...         F.cross_entropy(model(x), y).backward()
    ...         optimizer.step()
    >>> zico.result().score

    Each backward is one sample: ZiCo records the gradient that backward adds to each scored
    weight, whether or not the caller zeroes `.grad` in between. Entering the same ZiCo again adds
    to the same statistics; a fresh ZiCo starts from none.

    release_grads=False (default): training is unchanged, bit for bit. The gradient is read as it
    arrives, before autograd adds it to `.grad`, which the caller's optimizer uses as usual. Costs
    one copy of the first batch's gradients (the shift), kept until the ZiCo object is dropped.
    release_grads=True: for scoring-only loops. Each scored `.grad` is consumed and set to None
    once written, so no optimizer sees it; the first gradient is kept without a copy and memory
    stays at a training step's.
    `num_batches=2` lets the last batch use the closed form (no moments stored at all).
    """

    def __init__(self, model: nn.Module, layers: LayerSelector = None, *, num_batches: int | None = None,
                 release_grads: bool = False, nonfinite: str = "raise", bucket_mb: float = 25.0,
                 _selected: tuple[list[SelectedLayer], dict[str, str]] | None = None):
        check_options(nonfinite, bucket_mb)
        if num_batches is not None and num_batches < 2:
            raise ZiCoUserError(f"ZiCo needs at least 2 batches (it measures gradient spread), got num_batches={num_batches}")
        self.model = model
        self.layers, self._skipped = _selected or select_layers(model, layers)
        if _selected is None:
            check_weights_scorable(self.layers)
        self.release_grads = release_grads
        self.nonfinite = nonfinite
        self.stats = GradientStatistics(len(self.layers), int(bucket_mb * 2**20), num_batches)
        self._handles: list = []
        self._callback_queued = False
        self._lock = threading.Lock()  # hooks of a multi-GPU model run on one thread per device

    def attach(self) -> "ZiCo":
        if self._handles:
            raise RuntimeError("this ZiCo is already attached")
        for index, layer in enumerate(self.layers):
            if self.release_grads:
                handle = layer.weight.register_post_accumulate_grad_hook(self._consume_and_release(index))
            else:  # sees this backward's gradient before it is added to .grad
                handle = layer.weight.register_hook(self._record(index))
            self._handles.append(handle)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "ZiCo":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _queue_end_of_backward(self) -> None:
        with self._lock:
            if self._callback_queued:
                return
            self._callback_queued = True
        # Runs once the whole backward is done: consume the last bucket, next batch.
        torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)

    def _record(self, index: int) -> Callable[[torch.Tensor], None]:
        def record(grad: torch.Tensor) -> None:
            self._queue_end_of_backward()
            if self.stats.count[index] == 0:
                # Kept across batches, and autograd may make this very tensor the .grad that the
                # caller's next backward or zero_grad() writes in place: keep a copy.
                grad = grad.clone()
            # Otherwise consumed before backward() returns. Holding it also makes autograd copy it
            # into .grad instead of adopting it, so nothing can write our reference.
            self.stats.add(index, grad)

        return record

    def _consume_and_release(self, index: int) -> Callable[[torch.Tensor], None]:
        def consume(weight: torch.Tensor) -> None:
            self._queue_end_of_backward()
            grad = weight.grad
            weight.grad = None  # we hold the only reference now; it dies once consumed
            self.stats.add(index, grad)

        return consume

    def _end_of_backward(self) -> None:
        with nvtx_range("zico/statistics"):
            self.stats.end_batch()
        self._callback_queued = False

    def result(self) -> ZiCoResult:
        """Finalises on the device and copies the per-layer terms to the host in one sync."""
        return finish(self.stats, self.layers, self._skipped, self.nonfinite)


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_options(nonfinite: str, bucket_mb: float) -> None:
    if nonfinite not in ("raise", "nan"):
        raise ZiCoUserError(f"nonfinite must be 'raise' or 'nan', not {nonfinite!r}")
    if not isinstance(bucket_mb, (int, float)) or not bucket_mb >= 0:
        raise ZiCoUserError(f"bucket_mb must be a number of megabytes >= 0, not {bucket_mb!r}")


def check_weights_scorable(layers: list[SelectedLayer]) -> None:
    """Refuse, before any pass, weights whose gradients the kernels do not take (float64 above all:
    the statistics follow the authors' float32 numpy arithmetic, so a float64 path would be another
    score), and lazy weights not made yet (the first forward would make them: the model would change)."""
    for layer in layers:
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise ZiCoUserError(
                f"layer {layer.name!r} is lazy and has no weights yet (nn.Lazy* modules make them at the first "
                "forward); run one forward first, e.g. model(inputs), then score")
        if layer.weight.dtype not in _KERNEL_DTYPES:
            raise ZiCoUserError(
                f"layer {layer.name!r} has {str(layer.weight.dtype).replace('torch.', '')} weights; ZiCo scores "
                "float32, float16 or bfloat16 ones (the authors' float32 arithmetic): score a float32 copy, "
                "zico_score(copy.deepcopy(model).float(), ...), with float32 inputs")


def finish(stats: GradientStatistics, layers: list[SelectedLayer], skipped_layers: dict[str, str],
           nonfinite: str, losses: list[torch.Tensor] | None = None) -> ZiCoResult:
    """The ZiCoResult of finished statistics: one device-side finalisation, one host copy.
    Warns (ZeroSpreadWarning) when every scored layer had zero spread, saying what to check."""
    n = stats.batch
    if n < 2:
        raise ZiCoUserError(f"ZiCo needs gradients from at least 2 batches, got {n}; run more batches")
    skipped = dict(skipped_layers)
    scored = []
    for index, (layer, count) in enumerate(zip(layers, stats.count)):
        if count == n:
            scored.append(index)
        elif count == 0:
            skipped[layer.name] = "unused: no gradient reached its weight"
        else:
            skipped[layer.name] = f"received a gradient in only {count} of {n} batches"
    if not scored:
        raise ZiCoUserError("no scored layer received a gradient in every batch: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()))
    with nvtx_range("zico/finalize"):
        ratio_sums = stats.ratio_sums(scored)
        bad = stats.bad_batches(scored, ratio_sums.device).to(torch.float64)
        host = torch.cat([ratio_sums, bad]).tolist()  # the one host sync; logs are cheaper here
    k = len(scored)
    layer_terms: dict[str, float] = {}
    has_nonfinite = False
    for index, total, bad_batch in zip(scored, host[:k], host[k:]):
        name = layers[index].name
        if bad_batch != NO_BAD_BATCH or not math.isfinite(total):
            if nonfinite == "raise":
                where = f"batch {int(bad_batch)}" if bad_batch != NO_BAD_BATCH else "its statistics"
                raise NonFiniteGradientError(
                    f"layer {name!r} has a non-finite gradient (inf or NaN) in {where}; check the "
                    "inputs and loss, or pass nonfinite='nan' to get a NaN score instead")
            has_nonfinite = True
        if total > 0:
            layer_terms[name] = math.log(total)
        elif total == 0:
            skipped[name] = "every element has zero gradient std (contributes nothing)"
        else:
            skipped[name] = "non-finite gradient statistics (NaN)"
    score = math.fsum(layer_terms.values())
    if not layer_terms and not has_nonfinite:
        warnings.warn(ZeroSpreadWarning(_zero_spread_message(n, losses)), stacklevel=3)
    return ZiCoResult(math.nan if has_nonfinite else score, layer_terms, skipped, n)


def zico_score(model: nn.Module, batches: Iterable, loss_fn: Callable = F.cross_entropy, *,
               layers: LayerSelector = None, restore: bool = True, nonfinite: str = "raise",
               bucket_mb: float = 25.0, unpack_batch: Callable[[Any], tuple] | None = None,
               select_output: Callable[[Any], torch.Tensor] | None = None) -> ZiCoResult:
    """ZiCo score of `model` on `batches` (any iterable of (inputs, targets), e.g. a DataLoader).
    Every item is one of the N batches: for the paper's N = 2, pass itertools.islice(loader, 2).

    The authors' protocol: train mode, and per batch a forward, `loss_fn(logits, targets)` (mean
    cross-entropy by default; F.mse_loss for regression) and a backward from zeroed gradients.
    Inputs and weights keep their memory layout (channels_last is often faster), except in a CPU model
    with a conv that hits torch's channels_last defect (zico_fast.layout): its passes run in NCHW,
    inputs and conv weights converted (the weights put back after), which moves the score by rounding.

    unpack_batch(batch) -> (inputs, targets): for loaders whose items are not (inputs, targets),
    e.g. `lambda b: (b[0], b[1])` for (x, y, index) or `lambda b: (b["image"], b["label"])`.
    select_output(output) -> logits: for models returning a tuple or dict, e.g. `lambda o: o[0]`.

    With restore=True (default) the model is handed back exactly as found: parameters, buffers,
    .grad, train/eval mode, no hooks. restore=False (for models thrown away after) leaves it in
    train mode with its gradients cleared. BatchNorm running statistics are never updated.
    When every scored layer has zero gradient spread the score is 0 (the authors' answer for a
    network whose output ignores its input) and a ZeroSpreadWarning says what to check.
    """
    check_options(nonfinite, bucket_mb)
    if torch.is_inference_mode_enabled():
        raise ZiCoUserError("zico_score runs backward passes, which torch.inference_mode() forbids; call it "
                            "outside inference_mode (inside torch.no_grad() is fine: it enables gradients itself)")
    plan = model_plan(model, layers)
    check_weights_scorable(plan.layers)
    nchw = plan.cpu_layout_hazard() is not None  # the passes must run in NCHW (see the docstring)
    saved = plan.capture(model) if restore else None
    stats = GradientStatistics(len(plan.layers), int(bucket_mb * 2**20))
    weights = [layer.weight for layer in plan.layers]
    # Small models: read every .grad after backward(), one kernel call per batch. Larger ones:
    # consume gradients in hooks as backward produces them, so they are freed in buckets.
    in_hooks = sum(w.numel() * w.element_size() for w in weights) > stats.bucket_bytes
    zico = None
    if in_hooks:
        zico = ZiCo(model, nonfinite=nonfinite, release_grads=True, bucket_mb=bucket_mb,
                    _selected=(plan.layers, plan.skipped))
        zico.stats = stats  # one statistics object on either path
    losses = []
    swapped = plan.make_conv_weights_contiguous() if nchw else []
    try:
        plan.enter_scoring_mode(model)
        plan.clear_grads()
        if zico is not None:
            zico.attach()
        for index, inputs, targets, is_last in checked_batches(batches, unpack_batch, weights[0].device, nchw):
            if is_last and index == 1:
                stats.num_batches = 2  # N = 2 known now: the last batch uses the closed form
            # enable_grad: gradients are the point, so a caller's torch.no_grad() must not switch them off.
            with nvtx_range("zico/forward"), torch.enable_grad():
                output = model(inputs)
                loss = scalar_loss(loss_fn(logits_of(output, select_output, loss_fn, index), targets), index)
            with nvtx_range("zico/backward"):
                loss.backward()
            losses.append(loss.detach())
            if zico is None:
                grads = [w.grad for w in weights]
                plan.clear_grads()
                with nvtx_range("zico/statistics"):
                    stats.add_batch(grads)
            else:
                plan.clear_grads()  # the unscored parameters' grads (biases, BN)
        result = finish(stats, plan.layers, plan.skipped, nonfinite, losses)
        stats.recycle()
    finally:
        if zico is not None:
            zico.detach()
        plan.leave_scoring_mode()
        for weight, data in swapped:  # always: the caller's weights keep their layout
            weight.data = data
        if saved is not None:
            saved.restore(model, plan)
    return result


def _zero_spread_message(num_batches: int, losses: list[torch.Tensor] | None) -> str:
    same_loss = bool(losses) and len({float(loss) for loss in losses}) == 1
    return (f"ZiCo score is 0: all {num_batches} batches gave identical gradients in every scored "
            "layer (zero spread). " + ("Every batch gave the same loss: are the batches identical? " if same_loss
                                       else "") +
            "Check that the batches differ, that loss_fn uses the model's output (a regression model "
            "needs loss_fn=F.mse_loss, not cross-entropy), and that the output depends on the input.")


__all__ = ["ZiCo", "ZiCoResult", "NonFiniteGradientError", "ZeroSpreadWarning", "ZiCoUserError", "zico_score"]
