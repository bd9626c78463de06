"""NASWOT and AZ-NAS's expressivity, progressivity and trainability from the first batch's forward.

Forward hooks see the activations the ZiCo forward computes anyway. Trainability is the one proxy
that needs more work: one vector-Jacobian product per block (see BlockTap).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from zico_fast.errors import ZiCoUserError

BlockSelector = None | Sequence[nn.Module] | Callable[[nn.Module], Sequence[nn.Module]]


def default_blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of the longest nn.Sequential / nn.ModuleList nearest the model's root (NB201:
    the cells, MobileNet space: the blocks): the trunk whose block outputs AZ-NAS measures."""
    best, best_key = None, None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) >= 2:
            key = (-(name.count(".") + 1 if name else 0), len(module))  # shallowest, then longest
            if best_key is None or key > best_key:
                best, best_key = list(module), key
    if best is None:
        raise ZiCoUserError("the model has no nn.Sequential/nn.ModuleList of 2 or more blocks; pass "
                            "blocks=[module, ...] (the modules whose outputs AZ-NAS should measure)")
    return best


def resolve_blocks(model: nn.Module, blocks: BlockSelector) -> list[nn.Module]:
    if blocks is None:
        return default_blocks(model)
    chosen = list(blocks(model) if callable(blocks) else blocks)
    if len(chosen) < 1 or not all(isinstance(b, nn.Module) for b in chosen):
        raise ZiCoUserError("blocks must be a non-empty list of the model's modules, or a function model -> list")
    return chosen


class NaswotTap:
    """K = sum over ReLU units of [codes agree], accumulated as Gram matrices of the binary codes.

    Several ReLUs often read the same tensor (NB201: every edge out of a node); its Gram matrix is
    computed once and counted with its multiplicity, which gives NASLib's K exactly at a fraction
    of the cost: K = sum_t m_t (2 C_t C_t^T - r_t 1^T - 1 r_t^T + D_t), C_t the 0/1 codes [B, D_t].
    """

    def __init__(self, model: nn.Module):
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if not self.relus:
            raise ZiCoUserError("naswot needs nn.ReLU modules (it reads their activation patterns); "
                                "this model has none: leave naswot out")
        self.active = False
        self._seen: dict[int, list] = {}  # id(input) -> [input ref, multiplicity, K_t]; refs keep ids unique
        self.kernel: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(self._hook) for m in self.relus]

    def _hook(self, module, inputs, output) -> None:
        if not self.active:
            return
        x = inputs[0]
        entry = self._seen.get(id(x))
        if entry is not None and entry[0] is x:
            entry[1] += 1
            return
        with torch.no_grad():
            codes = (output.detach() > 0).flatten(1).to(torch.float32)  # 0/1: float32 sums exact below 2^24
            gram = (codes @ codes.T).double()
            r = codes.sum(1, dtype=torch.float64)
            agree = 2 * gram - r[:, None] - r[None, :] + codes.shape[1]
        self._seen[id(x)] = [x, 1, agree]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()

    def fold(self) -> None:
        """Ends the batch: sums the kernels and drops the references to its activations."""
        self.active = False
        if self._seen:
            self.kernel = sum(m * k for _, m, k in self._seen.values())
            self._seen.clear()

    def values(self) -> dict[str, float]:
        self.fold()
        if self.kernel is None:
            return {"naswot": math.nan}
        sign, logdet = torch.linalg.slogdet(self.kernel)
        return {"naswot": float(logdet) if sign > 0 else -math.inf}


class BlockTap:
    """The first batch's block features (the first block's input, then each block's output) and,
    for trainability, one vector-Jacobian product per block taken inside its forward hook.

    At that moment the block's graph exists; the product pulls a Rademacher vector from the output
    back to the input with retain_graph=True, so the forward and the ZiCo backward that follow
    are exactly what they would have been. Only input gradients are computed, no weight gradient.
    """

    def __init__(self, blocks: list[nn.Module], trainability: bool, generator: torch.Generator):
        self.blocks = blocks
        self.want_trainability = trainability
        self.generator = generator  # Rademacher vectors drawn in block order
        self.active = False
        self.entropies: list[float] = []
        self.terms: list[float] = []
        self._handles = [blocks[0].register_forward_pre_hook(self._pre)]
        self._handles += [b.register_forward_hook(self._post) for b in blocks]

    def _pre(self, module, inputs) -> None:
        if self.active and not self.entropies and _is_feature(inputs[0]):
            self.entropies.append(_eigen_entropy(inputs[0].detach()))

    def _post(self, module, inputs, output) -> None:
        if not (self.active and _is_feature(output)):
            return
        self.entropies.append(_eigen_entropy(output.detach()))
        f_in = inputs[0] if inputs else None
        if self.want_trainability and _is_feature(f_in) and f_in.requires_grad and output.requires_grad:
            g_out = torch.randint(0, 2, output.shape, generator=self.generator, dtype=output.dtype)
            g_out = g_out.to(output.device) * 2 - 1
            (g_in,) = torch.autograd.grad(output, f_in, g_out, retain_graph=True, allow_unused=True)
            if g_in is None:
                return
            if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
                self.terms.append(-math.inf)  # an identity block: AZ-NAS's rule
            else:
                self.terms.append(_trainability_term(g_in, g_out))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()

    def values(self) -> dict[str, float]:
        e = self.entropies
        steps = [b - a for a, b in zip(e, e[1:])]
        out = {"expressivity": _finite_or_neg_inf(sum(e)) if e else math.nan,
               "progressivity": _finite_or_neg_inf(min(steps)) if steps else math.nan}
        if self.want_trainability:
            out["trainability"] = sum(self.terms) / len(self.terms) if self.terms else math.nan
        return out


def _is_feature(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 2 and t.is_floating_point()


def _as_positions(t: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> [B * spatial, C] (observations x channels)."""
    return t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2).reshape(-1, t.shape[1])


def _eigen_entropy(feature: torch.Tensor) -> float:
    x = _as_positions(feature.float())
    x = x - x.mean(0, keepdim=True)
    sigma = (x.T @ x) / x.shape[0]
    s = torch.linalg.eigvalsh(sigma.double())
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def _trainability_term(g_in: torch.Tensor, g_out: torch.Tensor) -> float:
    if g_in.dim() == 4 and g_out.dim() == 4 and g_in.shape[-1] != g_out.shape[-1]:
        g_in = nn.functional.pixel_unshuffle(g_in, g_in.shape[-1] // g_out.shape[-1])  # align a stride
    a, b = _as_positions(g_in.float()), _as_positions(g_out.float())
    mat = (a.T @ b) / b.shape[0]
    top = float(torch.linalg.matrix_norm(mat.double(), ord=2))
    return -top - 1.0 / (top + 1e-6) + 2.0


def _finite_or_neg_inf(value: float) -> float:
    return value if not math.isnan(value) else -math.inf
