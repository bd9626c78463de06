"""DARTS / NAS-Bench-301 networks' parameters and FLOPs, counted analytically from the genotype (no
network is built), following darts_net's structure layer by layer."""
from __future__ import annotations

from dataclasses import dataclass

from zico_fast.spaces.darts_genotype import NONE, Genotype
from zico_fast.spaces.darts_net import CELL_OUTPUTS, STEM_MULTIPLIER, reduction_layers


@dataclass
class Counts:
    """params: trainable parameters. macs: multiply-accumulates of one image, counting convs (depthwise
    ones at k*k per output element), BN at 1 per output element and the Linear's weights, as the
    other spaces do. naslib: FLOPs as NASLib's `naslib_flops` counts them (tensorwatch's
    convention, as for NB201/NB101): conv MACs, BN 2 per element (1 when not affine), ReLU 1 per
    input element, 3x3 pools 9 per output element, the global pool (H+1)*(W+1) per channel, Linear
    in*out; sums, concatenations and `none` edges count nothing."""

    params: int = 0
    macs: int = 0
    naslib: int = 0

    def conv(self, cin: int, cout: int, k: int, out_px: int, depthwise: bool = False) -> None:
        weights = cout * k * k * (1 if depthwise else cin)
        self.params += weights
        self.macs += weights * out_px
        self.naslib += weights * out_px

    def bn(self, c: int, px: int, affine: bool) -> None:
        self.params += 2 * c if affine else 0
        self.macs += c * px
        self.naslib += (2 if affine else 1) * c * px

    def relu(self, elements: int) -> None:
        self.naslib += elements

    def pool(self, c: int, out_px: int, bn: bool) -> None:
        self.naslib += 9 * c * out_px
        if bn:
            self.bn(c, out_px, affine=False)

    def relu_conv_bn(self, cin: int, cout: int, px: int) -> None:
        self.relu(cin * px)
        self.conv(cin, cout, 1, px)
        self.bn(cout, px, affine=True)

    def factorized_reduce(self, cin: int, cout: int, size: int, affine: bool) -> None:
        """Two stride-2 1x1 convs on a size x size input (size even), each making half the channels."""
        out_px = (size // 2) ** 2
        self.relu(cin * size * size)
        self.conv(cin, cout // 2, 1, out_px)
        self.conv(cin, cout - cout // 2, 1, out_px)
        self.bn(cout, out_px, affine)

    def edge(self, op: str, c: int, size: int, stride: int, affine: bool, pool_bn: bool) -> None:
        """One op on a c-channel size x size input."""
        out_px = (size // stride) ** 2
        if op == NONE or (op == "skip_connect" and stride == 1):
            return
        if op == "skip_connect":
            self.factorized_reduce(c, c, size, affine)
        elif op in ("max_pool_3x3", "avg_pool_3x3"):
            self.pool(c, out_px, pool_bn)
        else:
            k = int(op[-1])
            self.relu(c * size * size)
            self.conv(c, c, k, out_px, depthwise=True)
            self.conv(c, c, 1, out_px)
            self.bn(c, out_px, affine)
            if op.startswith("sep_conv"):  # the second ReLU-depthwise-pointwise-BN, at stride 1
                self.relu(c * out_px)
                self.conv(c, c, k, out_px, depthwise=True)
                self.conv(c, c, 1, out_px)
                self.bn(c, out_px, affine)


def network_counts(genotype: Genotype, C: int, layers: int, num_classes: int, resolution: int, affine: bool,
                   pool_bn: bool) -> Counts:
    """The counts of DartsNetwork(genotype, C, layers, num_classes, affine, pool_bn) on
    resolution x resolution images (a multiple of 4)."""
    counts, size = Counts(), resolution
    c_stem = STEM_MULTIPLIER * C
    counts.conv(3, c_stem, 3, size * size)
    counts.bn(c_stem, size * size, affine=True)
    # (channels, size) of the two cells' outputs a cell reads: the one before the previous, the previous
    (c_pp, size_pp), (c_p, size_p), channels = (c_stem, size), (c_stem, size), C
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        channels *= 2 if reduction else 1
        if size_pp != size_p:
            counts.factorized_reduce(c_pp, channels, size_pp, affine=True)
        else:
            counts.relu_conv_bn(c_pp, channels, size_pp * size_pp)
        counts.relu_conv_bn(c_p, channels, size_p * size_p)
        out_size = size_p // 2 if reduction else size_p
        for op, source in (genotype.reduce if reduction else genotype.normal):
            stride = 2 if reduction and source < 2 else 1
            counts.edge(op, channels, size_p if stride == 2 else out_size, stride, affine, pool_bn)
        (c_pp, size_pp), (c_p, size_p) = (c_p, size_p), (CELL_OUTPUTS * channels, out_size)
    counts.naslib += (size_p + 1) ** 2 * c_p  # tensorwatch's count of the global average pool
    counts.params += c_p * num_classes + num_classes
    counts.macs += c_p * num_classes
    counts.naslib += c_p * num_classes
    return counts
