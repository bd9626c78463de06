"""grad_norm, SNIP and GSNR from the gradients the ZiCo backward already produces.

Tensor hooks on the ZiCo-scored weights see each backward's gradient of the weight as it arrives
(before autograd adds it to `.grad`), however ZiCo itself then reads it. They only read: ZiCo's
statistics and score are untouched.
"""
from __future__ import annotations

import math

import torch

from zico_fast.layers import SelectedLayer


class GradientTaps:
    """Per scored weight: first-batch L2 norm and sum|w*g|, and running sum / sum of squares of g."""

    def __init__(self, layers: list[SelectedLayer], first_batch: bool, moments: bool):
        self.layers = layers
        self.first_batch = first_batch  # grad_norm / snip wanted
        self.moments = moments  # gsnr wanted
        self.batch = 0  # index of the batch whose backward runs now (set by the caller's forward hook)
        self.norms: list[torch.Tensor | None] = [None] * len(layers)
        self.snips: list[torch.Tensor | None] = [None] * len(layers)
        self.sums: list[torch.Tensor | None] = [None] * len(layers)
        self.squares: list[torch.Tensor | None] = [None] * len(layers)
        self.counts = [0] * len(layers)
        self._handles: list = []

    def attach(self) -> None:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.weight.register_hook(self._hook(index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int):
        def read(grad: torch.Tensor) -> None:
            weight = self.layers[index].weight
            grad = grad.detach()
            with torch.no_grad():
                if self.batch == 0 and self.first_batch:
                    g = grad.double()
                    self.norms[index] = g.norm()
                    self.snips[index] = (g * weight.detach().double()).abs().sum()
                if self.moments:
                    g = grad.double()  # float64: (g1+g2)^2/(g1-g2)^2 cancels catastrophically in float32
                    if self.sums[index] is None:
                        self.sums[index], self.squares[index] = g.clone(), g * g
                    else:
                        self.sums[index].add_(g)
                        self.squares[index].addcmul_(g, g)
                    self.counts[index] += 1

        return read

    def values(self, names: tuple[str, ...]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "grad_norm" in names:
            out["grad_norm"] = _total(self.norms)
        if "snip" in names:
            out["snip"] = _total(self.snips)
        if "gsnr" in names:
            out["gsnr"] = self._gsnr()
        return out

    def _gsnr(self) -> float:
        terms = []
        for s, sq, n in zip(self.sums, self.squares, self.counts):
            if s is None or n < 2 or n != self.batch + 1:
                continue  # unused layer, or one that missed a batch (ZiCo skips those too)
            mean = s / n
            var = sq / n - mean * mean
            keep = var > 0
            total = torch.where(keep, mean * mean / var.clamp_min(1e-300), torch.zeros_like(var)).sum()
            terms.append(torch.where(total > 0, total.log(), torch.zeros_like(total)))
        return float(torch.stack(terms).sum()) if terms else math.nan


def _total(parts: list[torch.Tensor | None]) -> float:
    present = [p for p in parts if p is not None]
    return float(torch.stack(present).sum()) if present else 0.0
