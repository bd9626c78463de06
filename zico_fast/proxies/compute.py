"""`compute`: ZiCo and any chosen set of proxies from ONE scoring loop over the batches.

The loop IS `zico_score`'s: the added proxies only attach read-only hooks (forward hooks, gradient
tensor hooks) around one `zico_score` call, so the "zico" value is `zico_score(model, batches).score`
bit for bit (tested). Proxies that need one batch use the first one.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.errors import ZiCoUserError
from zico_fast.layers import LayerSelector, select_layers
from zico_fast.proxies.activation_taps import BlockSelector, BlockTap, NaswotTap, resolve_blocks
from zico_fast.proxies.gradient_taps import GradientTaps
from zico_fast.proxies.registry import PROXIES, resolve_names
from zico_fast.proxies.tap import Tap
from zico_fast.scorer import ZiCoResult, zico_score
from zico_fast.spaces.base import Cost

#: Seed of trainability's Rademacher vectors: fixed, so a network's value is reproducible and
#: independent of the global RNG (which seeds network initialisation).
TRAINABILITY_SEED = 0


def compute(model: nn.Module, batches: Iterable, names=("zico",), *, cost: Cost | None = None,
            loss_fn: Callable = F.cross_entropy, layers: LayerSelector = None, blocks: BlockSelector = None,
            restore: bool = True, nonfinite: str = "raise", select_output: Callable | None = None,
            details: dict | None = None) -> dict[str, float]:
    """{proxy name: value} for `names` (a tuple, "zico,params,..." or "all"); higher = better.

    `cost` (e.g. `space.cost(arch)`) feeds params/flops; `layers` picks the ZiCo-scored weights (and
    so the weights grad_norm/snip/gsnr/zico_bc read); `blocks` the modules whose outputs AZ-NAS's
    proxies measure (default: the elements of the model's longest Sequential/ModuleList).
    `loss_fn`, `restore`, `nonfinite` and `select_output` are zico_score's; `details`, when given,
    receives ZiCo's layer_terms, skipped and num_batches, and `reasons`: {proxy: why it is NaN}.
    Every value other than zico's is finite or NaN, never an exception: a proxy that is undefined for
    a network (NASWOT's kernel is singular, a block is an identity map, a shape no tap can read)
    is NaN and its reason is in details["reasons"]. zico is zico_score's value as it is.
    """
    names = resolve_names(names)
    wanted = {PROXIES[n].source for n in names}
    if "cost" in wanted and cost is None:
        raise ZiCoUserError("params/flops come from the space's analytic cost: pass cost=space.cost(arch)")
    out: dict[str, float] = {}
    if "cost" in wanted:
        out.update(params=float(cost.params), flops=float(cost.flops))
    if wanted <= {"cost"}:
        return {n: out[n] for n in names}
    taps = _Taps(model, names, layers, blocks)
    try:
        result = zico_score(model, batches, loss_fn, layers=layers, restore=restore, nonfinite=nonfinite,
                            select_output=select_output)
    finally:
        taps.detach()
    out["zico"] = result.score
    out.update(taps.values(result))
    reasons = taps.reasons(result)
    for name in names:
        if name not in out:  # no tap gave it (never expected; a NaN with a reason, not a KeyError)
            reasons.setdefault(name, f"{name} was not computed")
        value = out.setdefault(name, math.nan)
        if not math.isfinite(value):
            reasons.setdefault(name, f"{name} came out {value}")
            if name != "zico":  # ZiCo is reported exactly as zico_score gives it
                out[name] = math.nan
    if details is not None:
        details.update(layer_terms=result.layer_terms, skipped=result.skipped, num_batches=result.num_batches,
                       reasons={n: reasons[n] for n in names if n in reasons})
    return {n: out[n] for n in names}


class _Taps:
    """Every hook the chosen proxies need, switched on for the first batch's forward only."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], layers: LayerSelector, blocks: BlockSelector):
        self.names = names
        self.handles = [model.register_forward_pre_hook(self._next_batch)]
        self.batch = -1
        self.grads = self.naswot = self.blocks = self.shapes = None
        selected = None
        if {"grad_norm", "snip", "gsnr", "zico_bc"} & set(names):
            selected, _ = select_layers(model, layers)
        if {"grad_norm", "snip", "gsnr"} & set(names):
            self.grads = GradientTaps(selected, first_batch=bool({"grad_norm", "snip"} & set(names)),
                                      moments="gsnr" in names)
            self.grads.attach()
        if "naswot" in names:
            self.naswot = NaswotTap(model)
        if {"expressivity", "progressivity", "trainability"} & set(names):
            self.blocks = BlockTap(resolve_blocks(model, blocks), "trainability" in names, TRAINABILITY_SEED)
        if "zico_bc" in names:
            self.shapes = _OutputShapes(model, selected)

    def _next_batch(self, module, inputs) -> None:
        self.batch += 1
        if self.batch == 1 and self.naswot is not None:
            self.naswot.fold()
        for tap in (self.naswot, self.blocks, self.shapes):
            if tap is not None:
                tap.active = self.batch == 0
        if self.grads is not None:
            self.grads.batch = self.batch

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        for tap in (self.grads, self.naswot, self.blocks, self.shapes):
            if tap is not None:
                tap.detach()

    def values(self, result: ZiCoResult) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.grads is not None:
            out.update(self.grads.values(self.names))
        if self.naswot is not None:
            out.update(self.naswot.values())
        if self.blocks is not None:
            out.update(self.blocks.values())
        if self.shapes is not None:
            out["zico_bc"] = self.shapes.zico_bc(result)
        return out

    def reasons(self, result: ZiCoResult) -> dict[str, str]:
        """{proxy: why it is NaN} from every tap, and ZiCo's own."""
        out: dict[str, str] = {}
        if not math.isfinite(result.score):
            out["zico"] = f"ZiCo came out {result.score}: an inf or NaN gradient (nonfinite='nan')"
        for tap in (self.grads, self.naswot, self.blocks, self.shapes):
            if tap is not None:
                out.update(tap.reasons)
        return out


class _OutputShapes(Tap):
    """Output (positions, channels) of each scored layer on the first batch, for ZiCo-BC."""

    proxies = ("zico_bc",)

    def __init__(self, model: nn.Module, layers):
        super().__init__()
        self.shapes: dict[str, tuple[int, int]] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[layer.name].register_forward_hook(self.guarded(self._recorder(layer.name)))
                         for layer in layers if layer.name in modules]

    def _recorder(self, name: str):
        def output(module, inputs, out) -> None:
            if name in self.shapes:
                return
            if not (isinstance(out, torch.Tensor) and out.dim() >= 2):
                return self.fail(f"layer {name!r}'s output is not a [batch, channels, ...] tensor")
            self.shapes[name] = (math.prod(out.shape[2:]), out.shape[1])

        return output

    def zico_bc(self, result: ZiCoResult) -> float:
        """ZiCo's layer terms, each minus log(H_l W_l / sqrt(C_l)) of the layer's output (penalises
        depth and resolution, rewards width: ZiCo-BC's answer to ZiCo's bias towards thin, deep
        networks)."""
        missing = [name for name in result.layer_terms if name not in self.shapes]
        if missing:
            self.fail(f"layer {missing[0]!r} did not run on the first batch, so its output shape is unknown")
        if math.isnan(result.score):
            self.fail("ZiCo is NaN (an inf or NaN gradient)")
        return self.value("zico_bc", lambda: sum(
            term - math.log(self.shapes[name][0] / math.sqrt(self.shapes[name][1]))
            for name, term in result.layer_terms.items()))
