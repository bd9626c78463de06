"""The DARTS / NAS-Bench-301 cell space: genotypes, CIFAR networks, analytic costs, sampling, mutation.

Spellings and the canonical form live in `darts_genotype`, the PyTorch modules in `darts_net`, the
counts in `darts_cost`.
"""
from __future__ import annotations

import functools
import random

import torch
from torch import nn

from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import Cost, SearchSpace
from zico_fast.spaces.darts_cost import network_counts
from zico_fast.spaces.darts_genotype import CELLS, NODES, OPS, Genotype, canonical, parse
from zico_fast.spaces.darts_net import DartsNetwork
from zico_fast.spaces.fast_build import materialize

# The two networks of a genotype that the literature uses (see DartsSpace).
NETWORKS = {
    "naslib": {"C": 32, "layers": 8, "affine": False, "pool_bn": True},
    "darts": {"C": 36, "layers": 20, "affine": True, "pool_bn": False},
}
# Where a mutation may act: (cell, edge position, "op" | "input"); node 2's inputs are always 0 and 1.
_SITES = tuple((cell, position, kind) for cell in range(len(CELLS)) for position in range(2 * NODES)
               for kind in ("op", "input") if kind == "op" or position >= 2)


@functools.lru_cache(maxsize=4096)  # a search reads each candidate's string several times
def _canonical_text(text: str) -> Genotype:
    return canonical(parse(text))


def _genotype(arch) -> Genotype:
    return _canonical_text(arch) if isinstance(arch, str) else canonical(parse(arch))


class DartsSpace(SearchSpace):
    """DARTS cells (a normal and a reduction cell, NAS-Bench-301's 7 ops) on CIFAR.

    network="naslib" (default) is the network NASLib builds for NAS-Bench-301 and scores its zero-cost
    proxies on (search_spaces/nasbench301/graph.py): C=32 (stages of 32/64/128 channels), 8 cells
    N N R N N R N N, a 3x3 conv-BN stem of 3*C channels, the ops inside cells with non-affine BN and
    a non-affine BN after each pool, global average pooling and a Linear classifier; no auxiliary
    head (NASLib adds it only for training). Its parameter count is `naslib_params` of all 425 rows
    of data/nb301_dev.csv, and `naslib_flops` is its FLOPs (NASLib's convention).
    network="darts" is the DARTS paper's CIFAR-10 evaluation network: C=36, 20 cells (reductions at
    cells 6 and 13), affine BN in the cells, bare pools. Its auxiliary head is a training device, so
    it is not built, and its parameters are not counted, as DARTS reports parameter counts without it.
    C and layers override the preset's.

    `canonical` writes the DARTS genotype text. Equal architectures get one spelling: a node's two
    edges are an unordered pair, and intermediate nodes whose order the edges leave free are
    renumbered (that only permutes the channels a cell outputs). `compact` gives NASLib's encoding.
    """

    name = "darts"

    def __init__(self, num_classes: int = 10, resolution: int = 32, network: str = "naslib", C: int | None = None,
                 layers: int | None = None):
        if network not in NETWORKS:
            raise ZiCoUserError(f"unknown DARTS network {network!r}; choose one of {', '.join(NETWORKS)}")
        if resolution % 4 or resolution < 4:  # two stride-2 reductions, each needing an even size
            raise ZiCoUserError(f"resolution must be a positive multiple of 4, got {resolution}")
        preset = NETWORKS[network]
        self.num_classes, self.resolution, self.network = num_classes, resolution, network
        self.C = preset["C"] if C is None else C
        self.layers = preset["layers"] if layers is None else layers
        self.affine, self.pool_bn = preset["affine"], preset["pool_bn"]
        if self.C < 1 or self.layers < 1:
            raise ZiCoUserError(f"C and layers must be at least 1, got C={self.C}, layers={self.layers}")

    # ---- names -------------------------------------------------------------------------------
    def canonical(self, arch) -> str:
        return _genotype(arch).to_string()

    def genotype(self, arch) -> Genotype:
        """The canonical cell pair as data."""
        return _genotype(arch)

    def compact(self, arch) -> tuple:
        """NASLib's compact encoding of the canonical spelling (no `none` edges)."""
        return _genotype(arch).to_compact()

    # ---- search ------------------------------------------------------------------------------
    def random(self, rng: random.Random) -> str:
        """NAS-Bench-301's sampler: each intermediate node n of each cell reads 2 different nodes drawn
        uniformly from 0..n-1, each through one of the 7 ops drawn uniformly."""
        cells = []
        for _ in CELLS:
            cells.append([(rng.choice(OPS), source) for node in range(2, 2 + NODES)
                          for source in rng.sample(range(node), 2)])
        return canonical(Genotype(*map(tuple, cells))).to_string()

    def initial(self, rng: random.Random) -> str:
        return self.random(rng)

    def mutate(self, arch, rng: random.Random, num_blocks: int = 1) -> str:
        """A child with `num_blocks` distinct changes, each giving one edge another op or another input
        (a node never reads one node twice; node 2 always reads 0 and 1). A child equal to the parent
        (an input change can give an isomorphic cell) is drawn again."""
        if not 1 <= num_blocks <= len(_SITES):
            raise ZiCoUserError(f"num_blocks must be in 1..{len(_SITES)} (16 edge ops, 12 movable inputs), "
                                f"got {num_blocks}")
        parent = _genotype(arch)
        for _ in range(100):
            cells = [list(cell) for cell in parent.cells()]
            for cell, position, kind in rng.sample(_SITES, num_blocks):
                op, source = cells[cell][position]
                if kind == "op":
                    cells[cell][position] = (rng.choice([o for o in OPS if o != op]), source)
                else:
                    partner = cells[cell][position ^ 1][1]
                    node = 2 + position // 2
                    choices = [s for s in range(node) if s not in (source, partner)]
                    cells[cell][position] = (op, rng.choice(choices))
            child = canonical(Genotype(*map(tuple, cells)))
            if child != parent:
                return child.to_string()
        raise RuntimeError(f"no mutation of {parent.to_string()} found in 100 tries")  # not reached in practice

    # ---- networks and costs ------------------------------------------------------------------
    def build(self, arch, device=None, seed: int | None = None) -> nn.Module:
        """The network in train mode, directly on `device` (default: torch's default device). Its
        modules are made on 'meta', then every tensor is initialised as the constructors would: from
        the CPU generator in construction order (the bits DartsNetwork(...) draws under one torch
        seed), or, with `seed`, natively with torch.manual_seed(seed)'s bits."""
        genotype = _genotype(arch)  # outside the meta context: its errors are the user's
        with torch.device("meta"):
            net = DartsNetwork(genotype, self.C, self.layers, self.num_classes, self.affine, self.pool_bn).train()
        return materialize(net, device, seed=seed)

    def _counts(self, arch):
        return network_counts(_genotype(arch), self.C, self.layers, self.num_classes, self.resolution,
                              self.affine, self.pool_bn)

    def cost(self, arch) -> Cost:
        """Exact params; FLOPs = multiply-accumulates of one image (convs, BN 1 per output element,
        the Linear's weights), as in the other spaces. Depth: the number of cells."""
        counts = self._counts(arch)
        return Cost(params=counts.params, flops=counts.macs, depth=self.layers)

    def naslib_flops(self, arch) -> int:
        """FLOPs as NASLib's `flops` counts them (see darts_cost.Counts); for the default network it is
        `naslib_flops` * 1e6 of every row of data/nb301_dev.csv."""
        return self._counts(arch).naslib
