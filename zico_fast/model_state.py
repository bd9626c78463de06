"""Snapshot and restore of what scoring touches in a user's model, so it is handed back unchanged."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelState:
    """Train/eval flags, buffer values (BN running statistics) and `.grad` references.

    Parameters are not copied: scoring never writes them (tests check that). Buffers are small,
    so copying them costs far less than a forward pass.
    """

    training: list[tuple[nn.Module, bool]]
    buffers: list[tuple[torch.Tensor, torch.Tensor]]
    grads: list[tuple[nn.Parameter, torch.Tensor | None]]

    @classmethod
    def capture(cls, model: nn.Module) -> "ModelState":
        return cls(
            training=[(m, m.training) for m in model.modules()],
            buffers=[(b, b.detach().clone()) for b in model.buffers()],
            grads=[(p, p.grad) for p in model.parameters()],
        )

    def restore(self, model: nn.Module) -> None:
        for module, training in self.training:
            module.training = training
        with torch.no_grad():
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        for param, grad in self.grads:
            param.grad = grad
