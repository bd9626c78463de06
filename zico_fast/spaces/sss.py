"""The NATS-Bench size search space (SSS): one fixed NB201 cell, five channel counts; arch strings
'8:16:32:40:64', NATS-Bench's indices, its CIFAR networks (module names as NATS-Bench's), costs."""
from __future__ import annotations

import random

import torch
from torch import nn

from zico_fast.spaces.base import Cost, NumberedSpace
from zico_fast.spaces.fast_build import materialize

CHANNELS = (8, 16, 24, 32, 40, 48, 56, 64)  # the choices at every position
POSITIONS = 5  # cell, reduction, cell, reduction, cell
NUM_ARCHS = len(CHANNELS) ** POSITIONS  # 32,768
REDUCTIONS = (1, 3)  # positions that are stride-2 residual blocks; the others are cells
# Every SSS network uses this cell (NATS-Bench-TSS index 9930, the best NB201 cell on CIFAR-100 validation).
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# Its edges (to node, from node, op) in the string's order, which is also NATS-Bench's module order.
CELL_EDGES = ((1, 0, "conv"), (2, 0, "conv"), (2, 1, "conv"), (3, 0, "skip"), (3, 1, "conv"), (3, 2, "conv"))
FORMAT = (f"expected {POSITIONS} channel counts separated by ':', each one of "
          f"{', '.join(map(str, CHANNELS))}, e.g. '8:16:32:40:64'")


def parse(arch: str) -> tuple[int, ...]:
    """The 5 channel counts of `arch`; raises ValueError saying what is wrong."""
    if not isinstance(arch, str):
        raise ValueError(f"SSS architecture must be a string, got {type(arch).__name__}; {FORMAT}")
    parts = arch.strip().split(":")
    if len(parts) != POSITIONS:
        raise ValueError(f"{arch!r} has {len(parts)} channel counts, need {POSITIONS}; {FORMAT}")
    try:
        channels = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{arch!r} holds something that is not an integer; {FORMAT}") from None
    wrong = [c for c in channels if c not in CHANNELS]
    if wrong:
        raise ValueError(f"channel count {wrong[0]} in {arch!r} is not a choice of the space; {FORMAT}")
    return channels


def to_string(channels) -> str:
    return ":".join(map(str, channels))


# ---- NATS-Bench's network, written anew; attribute names follow its modules so that NATS-Bench's
# trained state dicts (api.get_net_param) load into these networks as they are ----------------------
class ReLUConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                                nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ChannelSkip(nn.Module):
    """The skip_connect edge of a cell whose input and output widths differ: ReLU, 1x1 conv, BN
    (NATS-Bench's FactorizedReduce at stride 1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


class SizeCell(nn.Module):
    """The fixed cell with `cin` input and `cout` output channels: edges from node 0 change the width."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _, src, op in CELL_EDGES:
            width = cin if src == 0 else cout
            if op == "conv":
                self.layers.append(ReLUConvBN(width, cout, 3))
            else:
                self.layers.append(nn.Identity() if width == cout else ChannelSkip(width, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            nodes.append(sum(layer(nodes[src]) for layer, (dst, src, _) in zip(self.layers, CELL_EDGES)
                             if dst == node))
        return nodes[3]


class ResidualReduction(nn.Module):
    """The stride-2 basic block between cells; its shortcut is a 2x2 avg-pool then a 1x1 conv.
    The structure of nb201_net.ResidualReduction, made of this file's ReLUConvBN so that the module
    names are NATS-Bench's (its trained weights load by name)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class SSSNetwork(nn.Module):
    """NATS-Bench's DynamicShapeTinyNet with N=1: stem conv to channels[0], then cell, reduction, cell,
    reduction, cell at the 5 widths, BN-ReLU, global pool, Linear. Returns the logits only (NATS-Bench's
    returns (features, logits))."""

    def __init__(self, channels: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]))
        self.cells = nn.ModuleList()
        previous = channels[0]
        for position, width in enumerate(channels):
            block = ResidualReduction if position in REDUCTIONS else SizeCell
            self.cells.append(block(previous, width))
            previous = width
        self.lastact = nn.Sequential(nn.BatchNorm2d(previous), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


def network_counts(channels: tuple[int, ...], resolution: int, num_classes: int) -> tuple[int, int]:
    """(params, MACs of one image) of SSSNetwork(channels), counted as NB201Space.cost counts: convs,
    BN (2 params, 1 MAC per output element) and the Linear's weights (no bias adds, pools, ReLU, sums)."""
    params = macs = 0

    def conv(cin: int, cout: int, kernel: int, pixels: int, bn: bool = True) -> None:
        nonlocal params, macs
        params += cin * cout * kernel * kernel + (2 * cout if bn else 0)
        macs += (cin * cout * kernel * kernel + (cout if bn else 0)) * pixels

    size, previous = resolution, channels[0]
    conv(3, previous, 3, size * size)  # stem
    for position, width in enumerate(channels):
        if position in REDUCTIONS:
            size //= 2
            conv(previous, width, 3, size * size)
            conv(width, width, 3, size * size)
            conv(previous, width, 1, size * size, bn=False)  # the shortcut's 1x1 conv
        else:
            for _, src, op in CELL_EDGES:
                cin = previous if src == 0 else width
                if op == "conv":
                    conv(cin, width, 3, size * size)
                elif cin != width:
                    conv(cin, width, 1, size * size)
        previous = width
    params += 2 * previous + previous * num_classes + num_classes  # last BN, Linear
    macs += previous * size * size + previous * num_classes
    return params, macs


class SSSSpace(NumberedSpace):
    """The 32,768 networks of NATS-Bench-SSS on CIFAR, named by their channel strings."""

    name = "sss"
    size = NUM_ARCHS  # NATS-Bench-SSS numbering

    def __init__(self, num_classes: int = 10, resolution: int = 32):
        if resolution % 4:  # two stride-2 stages: conv and avg-pool shortcut disagree on odd sizes
            raise ValueError(f"resolution must be a multiple of 4, got {resolution}")
        self.num_classes, self.resolution = num_classes, resolution

    # ---- names and indices -------------------------------------------------------------------
    def canonical(self, arch: str) -> str:
        return to_string(parse(arch))

    def index_of(self, arch: str) -> int:
        """NATS-Bench-SSS index (0..32767): NATS-Bench lists the strings with the first position
        slowest and each position's choices in increasing order, i.e. base 8."""
        index = 0
        for c in parse(arch):
            index = index * len(CHANNELS) + CHANNELS.index(c)
        return index

    def arch_from_index(self, index: int) -> str:
        index, digits = self.checked_index(index), []
        for _ in range(POSITIONS):
            index, digit = divmod(index, len(CHANNELS))
            digits.append(CHANNELS[digit])
        return to_string(reversed(digits))

    # ---- search ------------------------------------------------------------------------------
    def mutate(self, arch: str, rng: random.Random, num_blocks: int = 1) -> str:
        """Give `num_blocks` distinct random positions each a different random channel count."""
        channels = list(parse(arch))
        if not 1 <= num_blocks <= POSITIONS:
            raise ValueError(f"num_blocks must be in 1..{POSITIONS} (channel positions), got {num_blocks}")
        for position in rng.sample(range(POSITIONS), num_blocks):
            channels[position] = rng.choice([c for c in CHANNELS if c != channels[position]])
        return to_string(channels)

    # ---- networks and costs ------------------------------------------------------------------
    def build(self, arch: str, device=None, seed: int | None = None) -> nn.Module:
        """The network in train mode, directly on `device` (default: torch's default device), its
        weights those SSSNetwork(...) draws under torch.manual_seed(seed) (seed=None: from the CPU
        generator, as the constructors would)."""
        channels = parse(arch)
        with torch.device("meta"):  # modules without memory or draws; materialize gives them their tensors
            net = SSSNetwork(channels, self.num_classes)
        return materialize(net, device, seed=seed).train()

    def cost(self, arch: str) -> Cost:
        """Exact params; FLOPs = multiply-accumulates of one image, as NB201Space.cost counts them;
        depth = 3 cells (the same for every network of the space)."""
        params, macs = network_counts(parse(arch), self.resolution, self.num_classes)
        return Cost(params=params, flops=macs, depth=POSITIONS - len(REDUCTIONS))
