"""The NAS-Bench-201 / NATS-Bench-TSS topology space: arch strings, indices, CIFAR networks, costs."""
from __future__ import annotations

import functools
import random
import re
from typing import Iterator

import torch
from torch import nn

from zico_fast.spaces.base import Cost, SearchSpace
from zico_fast.spaces.fast_build import clone, materialize
from zico_fast.spaces.nb201_cost import network_counts

# Op order and edge order are NAS-Bench-201's own: the index order below is defined in terms of them.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node), in string order
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
FORMAT = ("expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' (node 1, 2, 3 with one op per earlier node), "
          "op one of " + ", ".join(OPS) + ", e.g. "
          "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'")
_ENTRY = re.compile(r"([a-z0-9_]+)~(\d+)")


# Parsed strings: a search parses each arch several times (canonical, key, cost, build); the
# canonical strings _to_string writes are entered as it writes them. Bounded: cleared when full.
_PARSED: dict[str, tuple[int, ...]] = {}
_PARSED_MAX = 1 << 16


@functools.lru_cache(maxsize=None)  # 15,625 possible cells
def _to_string(ops: tuple[int, ...]) -> str:
    names = [f"{OPS[o]}~{src}" for o, (_, src) in zip(ops, EDGES)]
    text = "|" + "|+|".join("|".join(names[a:b]) for a, b in ((0, 1), (1, 3), (3, 6))) + "|"
    _remember(text, ops)
    return text


def _remember(arch: str, ops: tuple[int, ...]) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[arch] = ops


def _parse(arch: str) -> tuple[int, ...]:
    """Op indices of the 6 edges in EDGES order; entries of a node may come in any order."""
    if not isinstance(arch, str):
        raise ValueError(f"NB201 architecture must be a string, got {type(arch).__name__}; {FORMAT}")
    ops = _PARSED.get(arch)
    if ops is None:
        ops = _parse_string(arch)
        _remember(arch, ops)
    return ops


def _parse_string(arch: str) -> tuple[int, ...]:
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"{arch!r} has {len(nodes)} node groups separated by '+', need 3; {FORMAT}")
    ops: dict[tuple[int, int], int] = {}
    for node, group in enumerate(nodes, start=1):
        if len(group) < 2 or group[0] != "|" or group[-1] != "|":
            raise ValueError(f"node {node} group {group!r} of {arch!r} must start and end with '|'; {FORMAT}")
        for entry in group[1:-1].split("|"):
            m = _ENTRY.fullmatch(entry)
            if m is None:
                raise ValueError(f"entry {entry!r} of node {node} in {arch!r} is not 'op~input'; {FORMAT}")
            name, src = m.group(1), int(m.group(2))
            if name not in OPS:
                raise ValueError(f"unknown op {name!r} in {arch!r}; {FORMAT}")
            if src >= node:
                raise ValueError(f"node {node} cannot take input from node {src} in {arch!r}; {FORMAT}")
            if (node, src) in ops:
                raise ValueError(f"node {node} has two ops from node {src} in {arch!r}; {FORMAT}")
            ops[(node, src)] = OPS.index(name)
        if len(ops) != node * (node + 1) // 2:
            raise ValueError(f"node {node} of {arch!r} needs exactly one op from each of nodes "
                             f"0..{node - 1}; {FORMAT}")
    return tuple(ops[e] for e in EDGES)


@functools.lru_cache(maxsize=None)
def _index_order() -> tuple[tuple[int, ...], dict[int, int]]:
    """NATS-Bench-TSS index -> lexicographic code, and its inverse.

    NAS-Bench-201 listed the cells lexicographically (first edge slowest, ops in OPS order) and then
    shuffled that list with Python's `random.seed(88); random.shuffle(archs)`.  The shuffle is spelt out
    here (Fisher-Yates over the Mersenne Twister's getrandbits, exactly what CPython's shuffle does) so
    that a future change to `random.shuffle` cannot silently reorder the indices.
    """
    mt, order = random.Random(88), list(range(NUM_ARCHS))
    for i in range(NUM_ARCHS - 1, 0, -1):
        bits = (i + 1).bit_length()
        j = mt.getrandbits(bits)
        while j > i:  # rejection sampling gives a uniform j in [0, i]
            j = mt.getrandbits(bits)
        order[i], order[j] = order[j], order[i]
    return tuple(order), {code: index for index, code in enumerate(order)}


def _code(ops: tuple[int, ...]) -> int:
    code = 0
    for o in ops:
        code = code * len(OPS) + o
    return code


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


class NB201Space(SearchSpace):
    """The 15,625 cells of NAS-Bench-201 on CIFAR (C=16, N=5 by default), named by their arch strings."""

    name = "nb201"
    has_index = True  # NAS-Bench-201 / NATS-Bench-TSS numbering

    def __init__(self, num_classes: int = 10, C: int = 16, N: int = 5, resolution: int = 32):
        if resolution % 4:  # two stride-2 stages: conv and avg-pool shortcut disagree on odd sizes
            raise ValueError(f"resolution must be a multiple of 4, got {resolution}")
        self.num_classes, self.C, self.N, self.resolution = num_classes, C, N, resolution

    # ---- names and indices -------------------------------------------------------------------
    def canonical(self, arch: str) -> str:
        return _to_string(_parse(arch))

    def index_of(self, arch: str) -> int:
        """NATS-Bench-TSS / NAS-Bench-201 index (0..15624) of `arch`."""
        return _index_order()[1][_code(_parse(arch))]

    def arch_from_index(self, index: int) -> str:
        if not 0 <= index < NUM_ARCHS:
            raise ValueError(f"NB201 index must be in 0..{NUM_ARCHS - 1}, got {index}")
        code, ops = _index_order()[0][index], []
        for _ in EDGES:
            code, o = divmod(code, len(OPS))
            ops.append(o)
        return _to_string(tuple(reversed(ops)))

    def enumerate(self) -> Iterator[str]:
        """All 15,625 arch strings in benchmark index order."""
        return (self.arch_from_index(i) for i in range(NUM_ARCHS))

    # ---- search ------------------------------------------------------------------------------
    def random(self, rng: random.Random) -> str:
        return self.arch_from_index(rng.randrange(NUM_ARCHS))

    def initial(self, rng: random.Random) -> str:
        return self.random(rng)

    def mutate(self, arch: str, rng: random.Random, num_blocks: int = 1) -> str:
        """Give `num_blocks` distinct random edges each a different random op."""
        ops = list(_parse(arch))
        if not 1 <= num_blocks <= len(EDGES):
            raise ValueError(f"num_blocks must be in 1..{len(EDGES)} (edges of a cell), got {num_blocks}")
        for edge in rng.sample(range(len(EDGES)), num_blocks):
            ops[edge] = rng.choice([o for o in range(len(OPS)) if o != ops[edge]])
        return _to_string(tuple(ops))

    # ---- networks and costs ------------------------------------------------------------------
    def build(self, arch: str, device=None, seed: int | None = None) -> nn.Module:
        """The network in train mode, directly on `device` (default: torch's default device).

        Its weights are PyTorch's default initialisation drawn from the CPU generator in constructor
        order, so under one torch seed they are the same bits on every device, and the same as
        NB201Network(...) would draw. With `seed`, the bits `torch.manual_seed(seed)` would give,
        drawn natively without touching the generator."""
        return _build_fast(_parse(arch), self.C, self.N, self.num_classes, device, seed)

    def reusing_builder(self, device):
        """A builder that reuses one network's modules for every candidate (see nb201_reuse), or
        None for a subclass whose networks are not this build's."""
        from zico_fast.spaces.nb201_reuse import ReusedNB201

        return ReusedNB201(self, device) if type(self).build is NB201Space.build else None

    def cost(self, arch: str) -> Cost:
        """Exact params; FLOPs = multiply-accumulates of one image: convs, BN (1 per output element)
        and the Linear's weights (no bias adds, pooling, ReLU or sums), as in the MobileNet space.

        `naslib_flops` counts more ops and is what NASLib's zc_nasbench201.json reports.
        """
        params, macs, _ = self._counts(arch)
        return Cost(params=params, flops=macs, depth=3 * self.N)

    def _counts(self, arch: str) -> tuple[int, int, int]:
        ops = _parse(arch)
        return network_counts(self.C, self.N, self.resolution, self.num_classes,
                              *(ops.count(OPS.index(op)) for op in ("avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1")))

    def naslib_flops(self, arch: str) -> int:
        """FLOPs as NASLib's `flops` (tensorwatch ModelStats) counts them: conv MACs, BN 2 and ReLU 1
        per element, avg-pool k*k per output element, adaptive pool (H+1)*(W+1) per channel, Linear
        in*out.  Matches `naslib_flops` * 1e6 of all 725 architectures in shared/data/nb201_dev.csv."""
        return self._counts(arch)[2]
