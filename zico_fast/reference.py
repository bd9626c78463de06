"""Pure-PyTorch and numpy references: the baselines the kernels are profiled against and tested by.

- `ReferenceStatistics`: the kernels' shifted-sums statistics written with plain torch ops.
- `ForeachStatistics`: the same update with `torch._foreach_*` multi-tensor ops.
- `AuthorsStatistics`: the authors' approach: every batch's gradients copied to host numpy,
  stacked, and `np.std` / `np.mean(np.abs(...))` at the end (float32 numpy, as they ran it).
- `zico_oracle`: the authors' formula in float64 on given gradient stacks (the test oracle).
- `zico_score_reference`, `authors_zico_score`: whole scoring loops built on the above.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.layers import LayerSelector, select_layers


def _ratio_sum(sum_dev, sum_sq_dev, sum_abs, count: int) -> torch.Tensor:
    """Float64 sum over kept elements of mean|g|/std(g), from shifted moments (zico_math.h)."""
    mean_dev = sum_dev.double() / count
    var = sum_sq_dev.double() / count - mean_dev * mean_dev
    keep = (sum_sq_dev != 0) & (var > 0)
    ratio = (sum_abs.double() / count) / var.clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    return torch.where(keep, ratio, torch.zeros_like(ratio)).sum()


class ReferenceStatistics:
    """Shifted-sums statistics with one torch op per tensor and step: the pure-PyTorch baseline."""

    def __init__(self):
        self.count = 0
        self.shift = self.sum_dev = self.sum_sq_dev = self.sum_abs = None

    def update(self, grads: list[torch.Tensor]) -> None:
        grads = [g.float() for g in grads]
        if self.count == 0:
            self.shift = [g.clone() for g in grads]
        elif self.count == 1:
            devs = [g - k for g, k in zip(grads, self.shift)]
            self.sum_dev = devs
            self.sum_sq_dev = [d * d for d in devs]
            self.sum_abs = [k.abs() + g.abs() for g, k in zip(grads, self.shift)]
        else:
            for g, k, s1, s2, a in zip(grads, self.shift, self.sum_dev, self.sum_sq_dev, self.sum_abs):
                d = g - k
                s1.add_(d)
                s2.addcmul_(d, d)
                a.add_(g.abs())
        self.count += 1

    def ratio_sums(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError(f"need at least 2 batches, got {self.count}")
        return torch.stack([_ratio_sum(s1, s2, a, self.count)
                            for s1, s2, a in zip(self.sum_dev, self.sum_sq_dev, self.sum_abs)])


class ForeachStatistics(ReferenceStatistics):
    """The same statistics with `torch._foreach_*` ops (a few launches per step for all tensors)."""

    def update(self, grads: list[torch.Tensor]) -> None:
        grads = [g.float() for g in grads]
        if self.count == 0:
            self.shift = [g.clone() for g in grads]
        elif self.count == 1:
            self.sum_dev = torch._foreach_sub(grads, self.shift)
            self.sum_sq_dev = torch._foreach_mul(self.sum_dev, self.sum_dev)
            self.sum_abs = torch._foreach_add(torch._foreach_abs(self.shift), torch._foreach_abs(grads))
        else:
            devs = torch._foreach_sub(grads, self.shift)
            torch._foreach_add_(self.sum_dev, devs)
            torch._foreach_addcmul_(self.sum_sq_dev, devs, devs)
            torch._foreach_add_(self.sum_abs, torch._foreach_abs(grads))
        self.count += 1


class AuthorsStatistics:
    """The authors' approach: host numpy copies of every batch's gradients, numpy at the end."""

    def __init__(self):
        self.per_batch: list[list[np.ndarray]] = []

    def update(self, grads: list[torch.Tensor]) -> None:
        self.per_batch.append([g.detach().cpu().reshape(-1).numpy() for g in grads])

    def ratio_sums(self) -> torch.Tensor:
        sums = []
        for layer in zip(*self.per_batch):
            stack = np.array(layer)
            std = np.std(stack, axis=0)
            kept = np.nonzero(std)[0]
            mean_abs = np.mean(np.abs(stack), axis=0)
            sums.append(float(np.sum(mean_abs[kept] / std[kept])))
        return torch.tensor(sums, dtype=torch.float64)


def zico_oracle(stacks: Mapping[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """The authors' formula in float64 on per-layer gradient stacks of shape [N, ...].

    Values are float64; the drop rule is numpy's float32 one (an element is dropped when the
    float32 np.std of its samples is exactly 0), because that is what decides the authors' result.
    """
    terms = {}
    for name, stack in stacks.items():
        stack32 = np.asarray(stack, dtype=np.float32).reshape(len(stack), -1)
        kept = np.std(stack32, axis=0) != 0
        stack64 = stack32.astype(np.float64)[:, kept]
        total = float(np.sum(np.mean(np.abs(stack64), axis=0) / np.std(stack64, axis=0)))
        if total != 0:
            terms[name] = float(np.log(total))
    return float(np.sum(list(terms.values()))), terms


def _scoring_loop(model: nn.Module, batches: Iterable, loss_fn: Callable, layers: LayerSelector, stats):
    selected, _ = select_layers(model, layers)
    model.train()
    for inputs, targets in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        stats.update([layer.weight.grad for layer in selected])
    model.zero_grad(set_to_none=True)
    sums = stats.ratio_sums()
    return float(torch.where(sums > 0, sums.log(), torch.zeros_like(sums)).sum())


def zico_score_reference(model: nn.Module, batches: Iterable, loss_fn: Callable = F.cross_entropy,
                         layers: LayerSelector = None) -> float:
    """The ZiCo score computed with pure PyTorch ops (no hooks, no kernels, no restore)."""
    return _scoring_loop(model, batches, loss_fn, layers, ReferenceStatistics())


def authors_zico_score(model: nn.Module, batches: Iterable, loss_fn: Callable = F.cross_entropy,
                       layers: LayerSelector = None) -> float:
    """The authors' per-candidate loop: host copies of each batch's gradients, numpy at the end."""
    return _scoring_loop(model, batches, loss_fn, layers, AuthorsStatistics())


def gradient_stacks(model: nn.Module, batches: Iterable, loss_fn: Callable = F.cross_entropy,
                    layers: LayerSelector = None) -> dict[str, np.ndarray]:
    """Each selected weight's per-batch gradients as float32 numpy [N, numel] (for the oracle).

    Weights that missed a gradient in some batch (unused layers) are left out, as ZiCo skips them.
    """
    selected, _ = select_layers(model, layers)
    columns: dict[str, list[np.ndarray]] = {layer.name: [] for layer in selected}
    model.train()
    num_batches = 0
    for inputs, targets in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        for layer in selected:
            if layer.weight.grad is not None:
                columns[layer.name].append(layer.weight.grad.detach().float().cpu().reshape(-1).numpy())
        num_batches += 1
    model.zero_grad(set_to_none=True)
    return {name: np.array(column) for name, column in columns.items() if len(column) == num_batches}
