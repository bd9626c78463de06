"""The NAS-Bench-201 / NATS-Bench-TSS topology space: arch strings, indices, CIFAR networks, costs."""
from __future__ import annotations

import random

from torch import nn

from zico_fast.spaces.base import Cost, NumberedSpace
from zico_fast.spaces.nb201_arch import EDGES, NUM_ARCHS, OPS, _code, _index_order, _parse, _to_string
from zico_fast.spaces.nb201_cost import network_counts
from zico_fast.spaces.nb201_net import _build_fast


class NB201Space(NumberedSpace):
    """The 15,625 cells of NAS-Bench-201 on CIFAR (C=16, N=5 by default), named by their arch strings."""

    name = "nb201"
    size = NUM_ARCHS  # NAS-Bench-201 / NATS-Bench-TSS numbering

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
        code, ops = _index_order()[0][self.checked_index(index)], []
        for _ in EDGES:
            code, o = divmod(code, len(OPS))
            ops.append(o)
        return _to_string(tuple(reversed(ops)))

    # ---- search ------------------------------------------------------------------------------
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
