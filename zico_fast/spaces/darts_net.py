"""DARTS / NAS-Bench-301 CIFAR networks in PyTorch: the cell ops, the cell, the network of stacked cells.

Written from the structure of DARTS (quark0/darts model.py, operations.py) and NASLib's NB301 graph
(naslib/search_spaces/nasbench301): a 3x3 conv-BN stem of `stem_multiplier * C` channels; `layers`
cells, the ones at layers//3 and 2*layers//3 reduction cells (stride 2, channels doubled), each cell
reading the two cells before it through a ReLU-1x1 conv-BN (a factorized reduce when the cell before
the previous one is at twice the resolution); global average pooling; a Linear classifier.
"""
from __future__ import annotations

import torch
from torch import nn

from zico_fast.spaces.darts_genotype import NONE, NODES, Genotype

STEM_MULTIPLIER = 3
CELL_OUTPUTS = NODES  # a cell concatenates its 4 intermediate nodes


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=affine))


class FactorizedReduce(nn.Module):
    """Halves the resolution with two stride-2 1x1 convs, the second shifted by one pixel, concatenated."""

    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(cin, cout - cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], 1))


class SepConv(nn.Sequential):
    """DARTS's separable conv: (ReLU, depthwise k x k, pointwise, BN) twice, the stride in the first."""

    def __init__(self, channels: int, kernel: int, stride: int, affine: bool):
        c, pad = channels, kernel // 2
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine),
                         nn.ReLU(), nn.Conv2d(c, c, kernel, 1, pad, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise k x k conv with dilation 2, pointwise conv, BN."""

    def __init__(self, channels: int, kernel: int, stride: int, affine: bool):
        c = channels
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, kernel, stride, kernel - 1, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine))


class Zero(nn.Module):
    """The `none` edge; multiplying (rather than making fresh zeros) keeps the graph connected."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def make_op(name: str, channels: int, stride: int, affine: bool, pool_bn: bool) -> nn.Module:
    """One edge's op. `pool_bn`: a non-affine BN after each pool, as NASLib's NB301 network has (the
    DARTS evaluation network has none)."""
    if name == NONE:
        return Zero(stride)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride, 1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False)) if pool_bn else pool
    kind, kernel = name[:-4], int(name[-1])  # e.g. "sep_conv_5x5" -> ("sep_conv", 5)
    return (SepConv if kind == "sep_conv" else DilConv)(channels, kernel, stride, affine)


class DartsCell(nn.Module):
    def __init__(self, edges, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool, affine: bool, pool_bn: bool):
        super().__init__()
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels))
        self.preprocess1 = ReLUConvBN(c_prev, channels)
        self.inputs = [source for _, source in edges]
        # In a reduction cell only the edges from the cell's inputs (nodes 0, 1) have stride 2.
        self.ops = nn.ModuleList(make_op(op, channels, 2 if reduction and source < 2 else 1, affine, pool_bn)
                                 for op, source in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for n in range(NODES):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], 1)


def reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


class DartsNetwork(nn.Module):
    """The CIFAR network of a genotype: stem, `layers` cells (C, 2C, 4C channels per stage), pool, Linear."""

    def __init__(self, genotype: Genotype, C: int, layers: int, num_classes: int, affine: bool, pool_bn: bool):
        super().__init__()
        c_stem = STEM_MULTIPLIER * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_prev_prev, c_prev, channels, reduction_prev = c_stem, c_stem, C, False
        cells = []
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            channels *= 2 if reduction else 1
            cells.append(DartsCell(genotype.reduce if reduction else genotype.normal, c_prev_prev, c_prev,
                                   channels, reduction, reduction_prev, affine, pool_bn))
            c_prev_prev, c_prev, reduction_prev = c_prev, CELL_OUTPUTS * channels, reduction
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))
