"""NASWOT and AZ-NAS's expressivity, progressivity and trainability from the first batch's forward.

Forward hooks see the activations the ZiCo forward computes anyway; trainability is the one proxy
that needs more work: one vector-Jacobian product per block (see BlockTap). The hooks keep tensors
(no host sync; values are read once, in `values()`), never raise, and leave every output as it was.
A proxy that cannot be computed is NaN, with the reason in the tap's `reasons`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from zico_fast.errors import ZiCoUserError
from zico_fast.proxies.az_nas import (covariance_statistic, cross_moment_statistic, eigen_entropies,
                                      pair_positions, trainability_terms)
from zico_fast.proxies.tap import Tap

BlockSelector = None | Sequence[nn.Module] | Callable[[nn.Module], Sequence[nn.Module]]
AZ_NAS = ("expressivity", "progressivity", "trainability")


def default_blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of the longest nn.Sequential / nn.ModuleList nearest the model's root (NB201:
    the cells, MobileNet space: the blocks): the trunk whose block outputs AZ-NAS measures.
    [] when the model has none."""
    best, best_key = [], None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) >= 2:
            key = (-(name.count(".") + 1 if name else 0), len(module))  # shallowest, then longest
            if best_key is None or key > best_key:
                best, best_key = list(module), key
    return best


def resolve_blocks(model: nn.Module, blocks: BlockSelector) -> list[nn.Module]:
    """The chosen blocks; [] when the default finds none (the AZ-NAS proxies are then NaN with that
    reason). A selector the caller passed that gives no modules is their error."""
    if blocks is None:
        return default_blocks(model)
    chosen = list(blocks(model) if callable(blocks) else blocks)
    if len(chosen) < 1 or not all(isinstance(b, nn.Module) for b in chosen):
        raise ZiCoUserError("blocks must be a non-empty list of the model's modules, or a function model -> list")
    return chosen


class NaswotTap(Tap):
    """K = sum over ReLU units of [codes agree], accumulated as Gram matrices of the binary codes.

    Several ReLUs often read the same tensor (NB201: every edge out of a node); its Gram matrix is
    computed once and counted with its multiplicity, which gives NASLib's K exactly at a fraction
    of the cost: K = sum_t m_t (2 C_t C_t^T - r_t 1^T - 1 r_t^T + D_t), C_t the 0/1 codes [B, D_t].
    """

    proxies = ("naswot",)

    def __init__(self, model: nn.Module):
        super().__init__()
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            self.fail("the model has no nn.ReLU modules (NASWOT reads their activation patterns)")
        self._seen: dict[int, list] = {}  # id(input) -> [input ref, multiplicity, K_t]; refs keep ids unique
        self.kernel: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(self.guarded(self._relu)) for m in relus]

    def _relu(self, module, inputs, output) -> None:
        x = inputs[0] if inputs else output
        entry = self._seen.get(id(x))
        if entry is not None and entry[0] is x:
            entry[1] += 1
            return
        if output.dim() < 1:
            return self.fail("a ReLU's output is a 0-d tensor, not a batch")
        with torch.no_grad():
            codes = (output.detach() > 0).reshape(output.shape[0], -1).to(torch.float32)  # 0/1: exact below 2^24
            gram = (codes @ codes.T).double()
            r = gram.diagonal()  # active units per sample (0/1 codes: c.c = sum c)
            agree = 2 * gram - r[:, None] - r[None, :] + codes.shape[1]
        self._seen[id(x)] = [x, 1, agree]

    def fold(self) -> None:
        """Ends the batch: sums the kernels and drops the references to its activations."""
        self.active = False
        if self._seen:
            kernels = [m * k for _, m, k in self._seen.values()]
            sizes = sorted({k.shape[0] for k in kernels})
            if len(sizes) > 1:
                self.fail(f"ReLU outputs have different leading sizes {sizes}: NASWOT needs every ReLU to see the batch")
            else:
                self.kernel = sum(kernels)
            self._seen.clear()

    def values(self) -> dict[str, float]:
        self.fold()
        if self.kernel is None:
            self.fail("no nn.ReLU ran on the first batch")
        elif "naswot" not in self.reasons:
            sign, logdet = torch.linalg.slogdet(self.kernel)
            if not (sign > 0 and torch.isfinite(logdet)):
                self.fail("the NASWOT kernel is singular (samples whose activation patterns make K rank-deficient)")
        return {"naswot": self.value("naswot", lambda: logdet)}


class BlockTap(Tap):
    """The first batch's block features (the first block's input unless it is the image, then each
    block's output) as float64 channel covariances, and, for trainability, one vector-Jacobian
    product per block taken inside its forward hook.

    At that moment the block's graph exists; the product pulls a Rademacher vector (drawn on the
    output's device, from a generator seeded `seed`, in block order) from the output back to the
    input with retain_graph=True, so the forward and the ZiCo backward that follow are exactly what
    they would have been. Only input gradients are computed, no weight gradient.
    """

    def __init__(self, blocks: list[nn.Module], trainability: bool, seed: int):
        super().__init__()
        self.proxies = AZ_NAS if trainability else AZ_NAS[:2]
        self.want_trainability = trainability
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._index = {}
        for k, block in enumerate(blocks):
            self._index.setdefault(id(block), k)
        self.labels: list[str] = []  # per feature
        self.sigmas: list[torch.Tensor] = []
        self.finite: list[torch.Tensor] = []
        self.moments: list[torch.Tensor] = []  # per block whose vector-Jacobian product was taken
        self.identity: list[torch.Tensor] = []
        self.moment_blocks: list[int] = []
        self._started = False
        self._previous = None  # the last block's output, while the first batch's forward runs
        if not blocks:
            self.fail("the model has no nn.Sequential/nn.ModuleList of 2 or more blocks; pass "
                      "blocks=[module, ...] (the modules whose outputs AZ-NAS should measure)")
            return
        self._handles = [blocks[0].register_forward_pre_hook(self.guarded(self._first_input))]
        self._handles += [b.register_forward_hook(self.guarded(self._block_output)) for b in blocks]

    def _first_input(self, module, inputs) -> None:
        # Features start after the stem: an input that needs no gradient was made by no weight (the
        # image itself, where block 0 is the stem: NB101, MobileNet) and is not a feature.
        if not self._started and inputs and _is_feature(inputs[0]) and inputs[0].requires_grad:
            self._feature(inputs[0], "the input of block 0")
        self._started = True

    def _block_output(self, module, inputs, output) -> None:
        self._started = True
        k = self._index[id(module)]
        if not _is_feature(output):
            kind = f"a {output.dim()}-d {output.dtype} tensor" if isinstance(output, torch.Tensor) else \
                f"a {type(output).__name__}"
            return self.fail(f"block {k}'s output is {kind}, not a floating-point tensor of 2+ dims "
                             "(pass blocks=[...] whose outputs are features)")
        self._feature(output, f"the output of block {k}")
        # Consecutive features: the input that is the previous block's output (a DARTS cell reads the
        # two before it, s0 and s1: its Jacobian is taken with respect to s1), else the first input.
        f_in = next((t for t in inputs if t is self._previous), inputs[0] if inputs else None)
        self._previous = output
        if self.want_trainability and _is_feature(f_in) and f_in.requires_grad:
            self._pull_back(k, f_in, output)

    def _feature(self, feature: torch.Tensor, label: str) -> None:
        sigma, finite = covariance_statistic(feature)
        self.labels.append(label)
        self.sigmas.append(sigma)
        self.finite.append(finite)

    def _pull_back(self, k: int, f_in: torch.Tensor, output: torch.Tensor) -> None:
        generator = self._generators.get(output.device)
        if generator is None:
            generator = self._generators[output.device] = torch.Generator(output.device).manual_seed(self.seed)
        g_out = torch.randint(0, 2, output.shape, generator=generator, dtype=output.dtype, device=output.device)
        g_out.mul_(2).sub_(1)
        g_in = None
        if output.requires_grad:
            (g_in,) = torch.autograd.grad(output, f_in, g_out, retain_graph=True, allow_unused=True)
        if g_in is None:
            g_in = torch.zeros_like(f_in)  # the output does not depend on the input: its Jacobian is 0
        paired = pair_positions(g_in, g_out)
        if isinstance(paired, str):
            return self.fail(f"block {k}: {paired}", ("trainability",))
        if g_in.shape != g_out.shape:
            identity = torch.zeros((), dtype=torch.bool)
        elif g_in.device.type == "cpu":  # stops at the first difference; on a GPU it would be a host sync
            identity = torch.tensor(torch.equal(g_in, g_out))
        else:
            identity = (g_in == g_out).all()
        self.moments.append(cross_moment_statistic(paired, g_out))
        self.identity.append(identity)
        self.moment_blocks.append(k)

    def values(self) -> dict[str, float]:
        """NaN rule: an undefined feature entropy (inf/NaN in the feature, or a constant feature,
        whose entropy is 0/0) makes expressivity and progressivity NaN wherever it sits, as AZ-NAS's
        sum and np.min propagate NaN; NaN ranks lowest."""
        self.active = False
        self._previous = None
        entropies, totals = eigen_entropies(self.sigmas) if self.sigmas else ([], [])
        if entropies:
            h, total, finite = (torch.stack(t).cpu() for t in (entropies, totals, self.finite))
            for i, label in enumerate(self.labels):
                if not finite[i]:
                    self.fail(f"{label} holds inf or NaN", AZ_NAS[:2])
                elif total[i] == 0:
                    self.fail(f"{label} is constant (zero variance: its entropy is 0/0)", AZ_NAS[:2])
                elif not torch.isfinite(h[i]):
                    self.fail(f"the entropy of {label} came out {float(h[i])}", AZ_NAS[:2])
            if len(entropies) < 2:
                self.fail("progressivity needs 2 or more block features; the first batch gave 1", ("progressivity",))
        else:
            self.fail("no block produced a feature on the first batch", AZ_NAS[:2])
        out = {"expressivity": self.value("expressivity", lambda: h.sum()),
               "progressivity": self.value("progressivity", lambda: (h[1:] - h[:-1]).min())}
        if self.want_trainability:
            out["trainability"] = self._trainability()
        return out

    def _trainability(self) -> float:
        if not self.moments:
            self.fail("no block's input requires a gradient to pull a vector back to", ("trainability",))
        else:
            terms = torch.stack(trainability_terms(self.moments)).cpu()
            identity = torch.stack([t.cpu() for t in self.identity])
            if identity.any():
                k = self.moment_blocks[int(identity.nonzero()[0])]
                self.fail(f"block {k} is an identity map (AZ-NAS scores it -inf)", ("trainability",))
            elif not torch.isfinite(terms).all():
                k = self.moment_blocks[int((~torch.isfinite(terms)).nonzero()[0])]
                self.fail(f"block {k}'s pulled-back gradient holds inf or NaN", ("trainability",))
        return self.value("trainability", lambda: terms.sum() / len(terms))


def _is_feature(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 2 and t.is_floating_point()
