"""grad_norm, SNIP and GSNR from the gradients the ZiCo backward already produces.

Tensor hooks on the ZiCo-scored weights see each backward's gradient of the weight as it arrives
(before autograd adds it to `.grad`), however ZiCo itself then reads it. They only read: ZiCo's
statistics and score are untouched. They keep tensors (no host sync) until `values()`.
"""
from __future__ import annotations

import torch

from zico_fast.layers import SelectedLayer
from zico_fast.proxies.tap import Tap


class ShiftedMoments:
    """Mean and variance over batches of one weight's gradient, exact where it matters.

    Sums of g - g_1 and (g - g_1)^2 in float64, shifted by the first batch's gradient g_1 (kept in
    its own dtype, an exact copy). Without the shift, sq/n - mean^2 cancels: its rounding residue
    passes `var > 0` where the spread is 0 and the ratio blows up. With it, at N = 2 the variance is
    fl((g_2 - g_1)^2) / 4, which is ((g_1 - g_2) / 2)^2 bit for bit, and g_1 == g_2 gives 0 exactly
    (so do N equal gradients at any N).
    """

    def __init__(self, first: torch.Tensor):
        self.shift = first.detach().clone()
        self.count = 1
        self.sum = self.squares = None  # of g - shift; both 0 after the first batch

    def add(self, grad: torch.Tensor) -> None:
        d = grad.detach().double() - self.shift.double()
        if self.sum is None:
            self.sum, self.squares = d, d * d
        else:
            self.sum.add_(d)
            self.squares.addcmul_(d, d)
        self.count += 1

    def mean_and_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.count
        shift = self.shift.double()
        if self.sum is None:
            return shift, torch.zeros_like(shift)
        mean_d = self.sum / n
        var = (self.squares / n - mean_d * mean_d).clamp_min(0)  # d-space: no cancellation against g_1
        return shift + mean_d, var


class GradientTaps(Tap):
    """Per scored weight: first-batch L2 norm and sum|w*g|, and the moments of g over batches."""

    def __init__(self, layers: list[SelectedLayer], first_batch: bool, moments: bool):
        super().__init__()
        self.layers = layers
        self.first_batch = first_batch  # grad_norm / snip wanted
        self.moments = moments  # gsnr wanted
        self.proxies = (("grad_norm", "snip") if first_batch else ()) + (("gsnr",) if moments else ())
        self.batch = 0  # index of the batch whose backward runs now (set by the caller's forward hook)
        self.norms: list[torch.Tensor | None] = [None] * len(layers)
        self.snips: list[torch.Tensor | None] = [None] * len(layers)
        self.stats: list[ShiftedMoments | None] = [None] * len(layers)

    def attach(self) -> None:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.weight.register_hook(self.guarded(self._reader(index), always=True)))

    def _reader(self, index: int):
        def gradient(grad: torch.Tensor) -> None:
            grad = grad.detach()
            with torch.no_grad():
                if self.batch == 0 and self.first_batch:
                    g = grad.double()
                    self.norms[index] = g.norm()
                    self.snips[index] = (g * self.layers[index].weight.detach().double()).abs().sum()
                if self.moments:
                    if self.stats[index] is None:
                        self.stats[index] = ShiftedMoments(grad) if self.batch == 0 else None
                    else:
                        self.stats[index].add(grad)

        return gradient

    def values(self, names: tuple[str, ...]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "grad_norm" in names:
            out["grad_norm"] = self.value("grad_norm", lambda: _total(self.norms))
        if "snip" in names:
            out["snip"] = self.value("snip", lambda: _total(self.snips))
        if "gsnr" in names:
            out["gsnr"] = self._gsnr()
        return out

    def _gsnr(self) -> float:
        """sum over layers of log(sum over elements with var > 0 of mean^2 / var); a layer with no
        such element, or one that missed a batch (ZiCo skips those too), is left out."""
        terms = []
        for stats in self.stats:
            if stats is None or stats.count < 2 or stats.count != self.batch + 1:
                continue
            mean, var = stats.mean_and_variance()
            keep = var > 0
            total = torch.where(keep, mean * mean / torch.where(keep, var, torch.ones_like(var)), 0.0).sum()
            terms.append(torch.where(total > 0, total.log(), torch.zeros_like(total)))
        if not terms:
            self.fail("no scored weight received a gradient in every batch (2 or more)", ("gsnr",))
        return self.value("gsnr", lambda: torch.stack(terms).sum())


def _total(parts: list[torch.Tensor | None]) -> torch.Tensor:
    present = [p for p in parts if p is not None]
    return torch.stack(present).sum() if present else torch.zeros(())
