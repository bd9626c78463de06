"""The NAS-Bench-101 space: CIFAR networks of a repeated cell, analytic costs, sampling and mutation.

Spellings, validation and pruning of cells live in `nb101_cell`; this module builds what NAS-Bench-101
trains: a 3x3 conv-BN-ReLU stem of 128 channels, 3 stacks of 3 cells with a 2x2 max-pool and doubled
channels between stacks, global average pooling and a Linear classifier.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import Cost, SearchSpace
from zico_fast.spaces.fast_build import materialize
from zico_fast.spaces.nb101_cell import INPUT, MAX_VERTICES, OPS, OUTPUT, Cell, module_hash, parse

_KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class NB101Cell(nn.Module):
    """One cell: interior vertex t applies its op to the sum of its sources (interior sources truncated
    to its width, the input through a 1x1 projection); the output concatenates the interior vertices
    that feed it and adds the projected input when the input feeds it too."""

    def __init__(self, cell: Cell, cin: int, cout: int):
        super().__init__()
        self.cell, n = cell, cell.num_vertices
        self.channels = cell.vertex_channels(cin, cout)
        # Registration order (vertex ops, then projections) mirrors nasbench-pytorch's, so tests can
        # copy its weights into this network parameter by parameter.
        self.vertex_ops = nn.ModuleDict({
            str(t): (ConvBNReLU(self.channels[t], self.channels[t], _KERNEL[cell.ops[t]]) if cell.ops[t] in _KERNEL
                     else nn.MaxPool2d(3, stride=1, padding=1))
            for t in range(1, n - 1)})
        self.projections = nn.ModuleDict({str(t): ConvBNReLU(cin, self.channels[t], 1)
                                          for t in range(1, n) if 0 in cell.edges[t]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, edges = self.cell.num_vertices, self.cell.edges
        values = [x]
        for t in range(1, n - 1):
            width = self.channels[t]
            inputs = [values[s][:, :width] for s in edges[t] if s]
            if 0 in edges[t]:
                inputs.append(self.projections[str(t)](x))
            values.append(self.vertex_ops[str(t)](sum(inputs[1:], inputs[0])))
        interior = [values[s] for s in edges[-1] if s]
        if not interior:
            return self.projections[str(n - 1)](x)
        out = interior[0] if len(interior) == 1 else torch.cat(interior, 1)
        return out + self.projections[str(n - 1)](x) if 0 in edges[-1] else out


class NB101Network(nn.Module):
    def __init__(self, cell: Cell, stem: int = 128, stacks: int = 3, cells_per_stack: int = 3, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, stem, 3)]
        channels = stem
        for stack in range(stacks):
            if stack:
                layers.append(nn.MaxPool2d(2, stride=2))
            width = stem * 2 ** stack
            for _ in range(cells_per_stack):
                layers.append(NB101Cell(cell, channels, width))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).mean((2, 3)))


class NB101Space(SearchSpace):
    """NAS-Bench-101 cells on CIFAR (stem 128, 3 stacks of 3 cells by default).

    `canonical` prunes and respells a cell but keeps its vertex order, because the order decides which
    vertices get the extra channel of an uneven split, so isomorphic spellings can build networks of
    slightly different sizes; `module_hash` is NAS-Bench-101's isomorphism-invariant key for lookups.
    """

    name = "nb101"

    def __init__(self, num_classes: int = 10, stem: int = 128, stacks: int = 3, cells_per_stack: int = 3,
                 resolution: int = 32):
        if resolution % 2 ** (stacks - 1):
            raise ZiCoUserError(f"resolution must be a multiple of {2 ** (stacks - 1)} ({stacks} stacks halve it),"
                                f" got {resolution}")
        self.num_classes, self.stem, self.stacks, self.cells_per_stack = num_classes, stem, stacks, cells_per_stack
        self.resolution = resolution

    # ---- names -------------------------------------------------------------------------------
    def canonical(self, arch) -> str:
        return parse(arch).to_string()

    def naslib_tuple(self, arch) -> tuple[int, ...]:
        """NASLib's encoding of the pruned cell (56 numbers for 7 vertices, n*n + n for n)."""
        return parse(arch).to_naslib_tuple()

    def spec(self, arch) -> tuple[list[list[int]], list[str]]:
        """The pruned (matrix, ops) pair, as NAS-Bench-101's ModelSpec holds it."""
        cell = parse(arch)
        return cell.matrix(), list(cell.ops)

    def module_hash(self, arch) -> str:
        return module_hash(parse(arch))

    # ---- search ------------------------------------------------------------------------------
    def random(self, rng: random.Random) -> str:
        """NAS-Bench-101's sampler: each of the 21 edges of a 7-vertex DAG present with probability 1/2,
        interior ops uniform, redrawn until the cell is valid (connected, at most 9 edges once pruned)."""
        while True:
            matrix = [[int(j > i and rng.random() < 0.5) for j in range(MAX_VERTICES)] for i in range(MAX_VERTICES)]
            ops = [INPUT] + [rng.choice(OPS) for _ in range(MAX_VERTICES - 2)] + [OUTPUT]
            try:
                return parse((matrix, ops)).to_string()
            except ZiCoUserError:
                continue

    def initial(self, rng: random.Random) -> str:
        return self.random(rng)

    def mutate(self, arch, rng: random.Random, num_blocks: int = 1) -> str:
        """A valid child made by `num_blocks` distinct changes, each flipping one of the 21 edges or giving
        one of the 5 interior vertices another op.  The parent is padded to 7 vertices with unused
        vertices of random ops, so mutations can grow a pruned cell back.  Where 100 draws find no valid
        child other than the parent (every single change of 'input|output<0' is pruned away or cuts it),
        one more change is made per draw, and so on."""
        cell = parse(arch)
        sites = MAX_VERTICES * (MAX_VERTICES - 1) // 2 + MAX_VERTICES - 2
        if not 1 <= num_blocks <= sites:
            raise ZiCoUserError(f"num_blocks must be in 1..{sites} (edges and interior ops of a 7-vertex cell), "
                                f"got {num_blocks}")
        parent = cell.to_string()
        pairs = [(i, j) for j in range(MAX_VERTICES) for i in range(j)]
        for attempt in range(1000):
            matrix, ops = _padded(cell, rng)
            for site in rng.sample(range(sites), min(sites, num_blocks + attempt // 100)):
                if site < len(pairs):
                    i, j = pairs[site]
                    matrix[i][j] ^= 1
                else:
                    v = site - len(pairs) + 1
                    ops[v] = rng.choice([o for o in OPS if o != ops[v]])
            try:
                child = parse((matrix, ops)).to_string()
            except ZiCoUserError:
                continue
            if child != parent:
                return child
        raise RuntimeError(f"no valid mutation of {parent!r} found in 1000 tries")  # not reached in practice

    # ---- networks and costs ------------------------------------------------------------------
    def build(self, arch, device=None, seed: int | None = None) -> nn.Module:
        """The network in train mode, directly on `device` (default: torch's default device). Its
        modules are made on 'meta' (no memory, no draws), then every tensor is initialised as the
        constructors would: from the CPU generator in construction order (same bits as
        NB101Network(...) under one torch seed, on every device), or, with `seed`, natively with
        torch.manual_seed(seed)'s bits and the generator untouched."""
        cell = parse(arch)  # outside the meta context: its errors are the user's, not a meta tensor's
        with torch.device("meta"):
            net = NB101Network(cell, self.stem, self.stacks, self.cells_per_stack, self.num_classes).train()
        return materialize(net, device, seed=seed)

    def cost(self, arch) -> Cost:
        """Exact params; FLOPs = multiply-accumulates of one image: convs, BN (1 per output element)
        and the Linear's weights (no bias adds, pooling, ReLU or sums), as in the other spaces.
        Depth: stacks x cells per stack."""
        params, macs, _ = self._count(parse(arch))
        return Cost(params=params, flops=macs, depth=self.stacks * self.cells_per_stack)

    def naslib_flops(self, arch) -> int:
        """FLOPs as NASLib's `flops` of NAS-Bench-101 counts them (tensorwatch-style, as for NB201):
        conv MACs, BN 2 and ReLU 1 per output element, max-pool k*k per output element, Linear in*out;
        the global mean is not counted.  Checked against `naslib_flops` of data/nb101_dev.csv."""
        return self._count(parse(arch))[2]

    def _count(self, cell: Cell) -> tuple[int, int, int]:
        params = macs = naslib = 0

        def conv_bn_relu(cin: int, cout: int, k: int, px: int) -> None:
            nonlocal params, macs, naslib
            params += cin * cout * k * k + 2 * cout
            macs += (cin * k * k + 1) * cout * px
            naslib += (cin * k * k + 3) * cout * px

        size = self.resolution
        conv_bn_relu(3, self.stem, 3, size * size)
        channels = self.stem
        for stack in range(self.stacks):
            if stack:
                size //= 2
                naslib += 4 * channels * size * size  # 2x2 max-pool
            width, px = self.stem * 2 ** stack, size * size
            for _ in range(self.cells_per_stack):
                vc = cell.vertex_channels(channels, width)
                for t in range(1, cell.num_vertices):
                    if 0 in cell.edges[t]:
                        conv_bn_relu(channels, vc[t], 1, px)
                    if t < cell.num_vertices - 1:
                        if cell.ops[t] in _KERNEL:
                            conv_bn_relu(vc[t], vc[t], _KERNEL[cell.ops[t]], px)
                        else:
                            naslib += 9 * vc[t] * px
                channels = width
        params += channels * self.num_classes + self.num_classes
        macs += channels * self.num_classes
        naslib += channels * self.num_classes
        return params, macs, naslib


def _padded(cell: Cell, rng: random.Random) -> tuple[list[list[int]], list[str]]:
    """The cell as a 7-vertex (matrix, ops) pair: unused vertices, inserted before the output with
    random ops and no edges, are pruned again unless a mutation connects them."""
    n, extra = cell.num_vertices, MAX_VERTICES - cell.num_vertices
    index = list(range(n - 1)) + [MAX_VERTICES - 1]  # old vertex -> padded vertex
    matrix = [[0] * MAX_VERTICES for _ in range(MAX_VERTICES)]
    for j, sources in enumerate(cell.edges):
        for i in sources:
            matrix[index[i]][index[j]] = 1
    ops = list(cell.ops[:-1]) + [rng.choice(OPS) for _ in range(extra)] + [OUTPUT]
    return matrix, ops
