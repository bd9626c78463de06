"""NAS-Bench-201's CIFAR networks and their fast build from meta prototypes; shared by the space
(nb201.py) and the reusing builder (nb201_reuse.py)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from zico_fast.spaces.fast_build import clone, materialize
from zico_fast.spaces.nb201_arch import EDGES, OPS


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))


class Zero(nn.Module):
    """The 'none' op; multiplying (rather than returning fresh zeros) keeps the graph connected."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _op(index: int, channels: int) -> nn.Module:
    name = OPS[index]
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReLUConvBN(channels, channels, 3 if name == "nor_conv_3x3" else 1)


class Cell(nn.Module):
    """4-node DAG: node i is the sum of the ops on its edges from nodes 0..i-1; node 3 is the output."""

    def __init__(self, ops: tuple[int, ...], channels: int):
        super().__init__()
        self.edges = nn.ModuleList(_op(o, channels) for o in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            nodes.append(sum(op(nodes[src]) for op, (dst, src) in zip(self.edges, EDGES) if dst == node))
        return nodes[3]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's stage transition: a stride-2 basic block whose shortcut is avg-pool + 1x1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem, 3 stages of N cells (C, 2C, 4C channels) joined by reductions, BN-ReLU, pool, Linear."""

    def __init__(self, ops: tuple[int, ...], C: int = 16, N: int = 5, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResidualReduction(width // 2, width))
            layers.extend(Cell(ops, width) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.lastact(self.cells(self.stem(x))))
        return self.classifier(x.flatten(1))


@functools.lru_cache(maxsize=8)
def _prototypes(C: int, N: int, num_classes: int):
    """(network with edgeless cells, {cell position: width}, {(op, width): op module}), all on 'meta'.

    Built once per network shape; every candidate is then cloned from these (see fast_build)."""
    with torch.device("meta"):
        net = NB201Network((0,) * len(EDGES), C, N, num_classes)
        widths, stage = {}, 0
        for i, layer in enumerate(net.cells):
            stage += isinstance(layer, ResidualReduction)
            if isinstance(layer, Cell):
                widths[i] = C * 2 ** stage
                layer.edges = nn.ModuleList()
        ops = {(o, w): _op(o, w) for o in range(len(OPS)) for w in set(widths.values())}
    return net.train(), widths, ops


def _build_fast(ops: tuple[int, ...], C: int, N: int, num_classes: int, device, seed=None) -> NB201Network:
    """NB201Network(ops, C, N, num_classes) with the same weights under the same seed, built by
    cloning prototypes and initialising every tensor in one pass directly on `device`."""
    proto, widths, op_protos = _prototypes(C, N, num_classes)
    recipes: dict = {}
    net = clone(proto, recipes)
    for i, width in widths.items():
        net.cells[i].edges._modules = {str(e): clone(op_protos[(o, width)], recipes) for e, o in enumerate(ops)}
    return materialize(net, device, recipes, seed)
