"""The paper's ImageNet search space: Zen-NAS / ZiCo "SuperResIDW" MobileNet-style networks."""
from __future__ import annotations

import random
from dataclasses import replace

import torch
from torch import nn
import torch.nn.functional as F

from .base import Cost, SearchSpace
from .fast_build import materialize
# The string grammar lives in mobilenet_structure; these names are this module's public API too.
from .mobilenet_structure import (  # noqa: F401
    CONV_KERNELS, EXPANSIONS, FORMAT_HELP, IDW_KERNELS, INITIAL, ZICO_450M, Block, parse, round8)

WIDTH_SCALES = (2.5, 2, 1.5, 1.25, 1, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)


def _out_size(size: int, stride: int) -> int:
    # Every conv here pads (k-1)//2 with odd k, so the output is ceil(size / stride) for any size.
    return (size - 1) // stride + 1


def _shortcut(reslink: bool, cin: int, cout: int, stride: int, sub_layer: int, first: bool) -> str:
    if not reslink:
        return "none"
    # Zen-NAS: a block's very first unit always projects (ResBlockProj); the others on a shape change.
    if (sub_layer == 0 and first) or stride != 1 or cin != cout:
        return "proj"
    return "identity"


def _bn_conv(cin: int, cout: int, kernel: int, stride: int, groups: int, eps: float) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=eps)]


class InvertedUnit(nn.Module):
    """1x1 -BN-ReLU, kxk depthwise -BN-ReLU, 1x1 -BN, plus the shortcut, then ReLU (Zen-NAS's order)."""

    def __init__(self, cin, hidden, cout, kernel, stride, shortcut: str, eps: float):
        super().__init__()
        self.body = nn.Sequential(*_bn_conv(cin, hidden, 1, 1, 1, eps), nn.ReLU(),
                                  *_bn_conv(hidden, hidden, kernel, stride, hidden, eps), nn.ReLU(),
                                  *_bn_conv(hidden, cout, 1, 1, 1, eps))
        self.shortcut = shortcut  # "none", "identity" or "proj"
        # Zen-NAS's projection is a 1x1 conv *with* bias (nn.Conv2d's default) followed by BN.
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride),
                                   nn.BatchNorm2d(cout, eps=eps))
                     if shortcut == "proj" else None)

    def forward(self, x):
        y = self.body(x)
        if self.proj is not None:
            y = y + self.proj(x)
        elif self.shortcut == "identity":
            y = y + x
        return F.relu(y)


class MobileNetNet(nn.Module):
    """Blocks in order, global average pool, Linear classifier."""

    def __init__(self, features: list[nn.Module], last_channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MobileNetSpace(SearchSpace):
    """Zen-NAS/ZiCo's MobileNet-style space (search_space_IDW_fixfc) over structure strings.

    `no_reslink` builds the networks ZiCo scores (no residual links); `split_threshold` reproduces
    Zen-NAS's post-mutation split of any block with >= 6 sub_layers into two 3-sub_layer blocks
    (a 7-layer block becomes 3+3, as in their code); None keeps mutated blocks whole.
    """

    name = "mobilenet"

    def __init__(self, resolution: int = 224, num_classes: int = 1000, no_reslink: bool = False,
                 bn_eps: float = 1e-5, max_layers: int | None = None, in_channels: int = 3,
                 split_threshold: int | None = 6, random_steps: int = 10):
        self.resolution, self.num_classes, self.no_reslink = resolution, num_classes, no_reslink
        self.bn_eps, self.max_layers, self.in_channels = bn_eps, max_layers, in_channels
        self.split_threshold, self.random_steps = split_threshold, random_steps

    def parse(self, arch: str) -> list[Block]:
        return parse(arch, self.in_channels)

    def canonical(self, arch: str) -> str:
        return "".join(map(str, self.parse(arch)))

    def initial(self, rng: random.Random) -> str:
        return INITIAL

    def random(self, rng: random.Random) -> str:
        """`random_steps` single-block mutations of the initial structure, each kept within max_layers."""
        arch = self.initial(rng)
        for _ in range(self.random_steps):
            for _attempt in range(100):
                child = self.mutate(arch, rng)
                if self.max_layers is None or self.cost(child).depth <= self.max_layers:
                    arch = child
                    break
        return arch

    def mutate(self, arch: str, rng: random.Random, num_blocks: int = 1) -> str:
        """Replace `num_blocks` distinct blocks (never a fixed 1x1 conv) by random variants, re-link channels.

        Zen-NAS draws block indices with replacement over all blocks, so some of its mutations are
        no-ops; drawing distinct mutable blocks makes every child differ in the intended number of blocks.
        """
        blocks = self.parse(arch)
        mutable = [i for i, b in enumerate(blocks) if not (b.is_conv and b.kernel == 1)]
        if not mutable:
            raise ValueError(f"{arch!r} has no mutable block (only fixed 1x1 convs); {FORMAT_HELP}")
        for i in rng.sample(mutable, min(num_blocks, len(mutable))):
            blocks[i] = self._variant(blocks[i], rng)
        for i in range(1, len(blocks)):  # the chain stays consistent: each in = previous out
            blocks[i] = replace(blocks[i], in_ch=blocks[i - 1].out_ch)
        return "".join(map(str, self._split(blocks)))

    @staticmethod
    def _widths(channels: int) -> list[int]:
        # Distinct rounded widths, drawn uniformly like Zen-NAS's deduplicated candidate list.
        return sorted({round8(max(8, channels * s)) for s in WIDTH_SCALES})

    def _variant(self, b: Block, rng: random.Random) -> Block:
        if b.is_conv:  # the stem only changes its width
            return replace(b, out_ch=rng.choice(self._widths(b.out_ch)))
        layers = [n for n in range(b.layers - 2, b.layers + 3) if n >= 1]
        return replace(b, expansion=rng.choice(EXPANSIONS), kernel=rng.choice(IDW_KERNELS),
                       out_ch=rng.choice(self._widths(b.out_ch)),
                       bottleneck=rng.choice(self._widths(b.bottleneck)), layers=rng.choice(layers))

    def _split(self, blocks: list[Block]) -> list[Block]:
        t, out = self.split_threshold, []
        for b in blocks:
            if t is None or b.is_conv or b.layers < t:
                out.append(b)
            else:
                out += [replace(b, layers=t // 2), replace(b, in_ch=b.out_ch, stride=1, layers=t - t // 2)]
        return out

    def build(self, arch: str, device=None, seed: int | None = None) -> nn.Module:
        """The network in train mode, directly on `device` (default: torch's default device), initialised
        as its constructors would under torch.manual_seed(seed) (seed=None: from the CPU generator)."""
        with torch.device("meta"):  # modules without memory or draws; materialize gives them their tensors
            net = self._network(arch)
        return materialize(net, device, seed=seed)

    def _network(self, arch: str) -> nn.Module:
        """The network as its constructors make it, on torch's current default device."""
        blocks, eps, features = self.parse(arch), self.bn_eps, []
        for b in blocks:
            if b.is_conv:
                for i in range(b.layers):
                    cin, stride = (b.in_ch, b.stride) if i == 0 else (b.out_ch, 1)
                    features.append(nn.Sequential(*_bn_conv(cin, b.out_ch, b.kernel, stride, 1, eps), nn.ReLU()))
            else:
                for cin, hidden, cout, k, stride, i, first in b.units():
                    features.append(InvertedUnit(cin, hidden, cout, k, stride,
                                                 _shortcut(not self.no_reslink, cin, cout, stride, i, first), eps))
        return MobileNetNet(features, blocks[-1].out_ch, self.num_classes).train()

    def cost(self, arch: str, reslink: bool | None = None) -> Cost:
        """Params and MACs (conv, depthwise, BN, Linear; no bias adds) of the network `build` returns.

        `reslink=True` costs the deployed network with residual links whatever `no_reslink` says.
        """
        blocks = self.parse(arch)
        reslink = not self.no_reslink if reslink is None else reslink
        size, params, macs = self.resolution, 0, 0

        def conv_bn(cin, cout, kernel, out_size, groups=1):
            nonlocal params, macs
            params += cin * cout * kernel * kernel // groups + 2 * cout
            macs += (cin * cout * kernel * kernel // groups + cout) * out_size * out_size

        for b in blocks:
            if b.is_conv:
                for i in range(b.layers):
                    cin, stride = (b.in_ch, b.stride) if i == 0 else (b.out_ch, 1)
                    size = _out_size(size, stride)
                    conv_bn(cin, b.out_ch, b.kernel, size)
                continue
            for cin, hidden, cout, k, stride, i, first in b.units():
                out_size = _out_size(size, stride)
                conv_bn(cin, hidden, 1, size)
                conv_bn(hidden, hidden, k, out_size, groups=hidden)
                conv_bn(hidden, cout, 1, out_size)
                if _shortcut(reslink, cin, cout, stride, i, first) == "proj":
                    conv_bn(cin, cout, 1, out_size)
                    params += cout  # the projection conv's bias
                size = out_size
        last = blocks[-1].out_ch
        params += last * self.num_classes + self.num_classes
        macs += last * self.num_classes
        return Cost(params=params, flops=macs, depth=sum(b.layers for b in blocks))

    def within_budget(self, arch: str, max_flops: float | None = None, max_params: float | None = None,
                      max_layers: int | None = None) -> bool:
        """Budget check from the string alone, on the deployed network (with residual links), as ZiCo does.

        `max_layers` defaults to the space's own; depth is the total sub_layers (14 for 450M/600M).
        """
        c = self.cost(arch, reslink=True)
        max_layers = self.max_layers if max_layers is None else max_layers
        return ((max_flops is None or c.flops <= max_flops) and (max_params is None or c.params <= max_params)
                and (max_layers is None or c.depth <= max_layers))
