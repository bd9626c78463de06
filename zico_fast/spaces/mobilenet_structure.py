"""MobileNet structure strings (Zen-NAS / ZiCo "SuperResIDW"): their grammar, blocks and parser.

Kept apart from the networks they describe (mobilenet.py) so that reading, writing and checking a
string needs neither torch nor the search space.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FORMAT_HELP = (
    "expected a concatenation of blocks such as 'SuperConvK3BNRELU(3,16,2,1)SuperResIDWE1K7(16,40,2,40,1)"
    "SuperConvK1BNRELU(40,2048,1,1)': SuperConvK{1,3,5,7}BNRELU(in,out,stride,sub_layers) or "
    "SuperResIDWE{1,2,4,6}K{3,5,7}(in,out,stride,bottleneck,sub_layers), positive integers, each block's "
    "in equal to the previous block's out"
)
# The start of ZiCo's search (scripts/ZiCo_NAS_ImageNet_flops450M.sh, the same as Zen-NAS's 400M/600M runs).
INITIAL = ("SuperConvK3BNRELU(3,8,2,1)SuperResIDWE6K3(8,32,2,8,1)SuperResIDWE6K3(32,48,2,32,1)"
           "SuperResIDWE6K3(48,96,2,48,1)SuperResIDWE6K3(96,128,2,96,1)SuperConvK1BNRELU(128,2048,1,1)")
# The published ZiCo 450M-FLOPs network (78.1% top-1 after distillation).
ZICO_450M = ("SuperConvK3BNRELU(3,16,2,1)SuperResIDWE1K7(16,40,2,40,1)SuperResIDWE2K7(40,80,2,64,1)"
             "SuperResIDWE4K7(80,96,2,96,5)SuperResIDWE2K7(96,224,2,224,5)SuperConvK1BNRELU(224,2048,1,1)")

EXPANSIONS, IDW_KERNELS, CONV_KERNELS = (1, 2, 4, 6), (3, 5, 7), (1, 3, 5, 7)
_TOKEN = re.compile(r"SuperConvK(\d+)BNRELU\(([^()]*)\)|SuperResIDWE(\d+)K(\d+)\(([^()]*)\)")


def round8(x: float) -> int:
    """Zen-NAS's smart_round(x, base=8): nearest multiple of 8 (Python's round, ties to even), at least 8."""
    return max(8, round(x / 8) * 8)


@dataclass(frozen=True)
class Block:
    """One block of a structure string; `expansion` is 0 for a plain SuperConvKxBNRELU block."""

    kernel: int
    in_ch: int
    out_ch: int
    stride: int
    layers: int
    expansion: int = 0
    bottleneck: int = 0

    @property
    def is_conv(self) -> bool:
        return self.expansion == 0

    def __str__(self) -> str:
        if self.is_conv:
            return f"SuperConvK{self.kernel}BNRELU({self.in_ch},{self.out_ch},{self.stride},{self.layers})"
        return (f"SuperResIDWE{self.expansion}K{self.kernel}"
                f"({self.in_ch},{self.out_ch},{self.stride},{self.bottleneck},{self.layers})")

    def units(self):
        """The inverted-bottleneck units as (in, hidden, out, kernel, stride, sub_layer, first_of_pair).

        As in Zen-NAS, a sub_layer is two units: in -> bottleneck, then bottleneck -> out; the hidden
        (depthwise) widths are the expansion times the unit's bottleneck / out width, rounded to 8.
        """
        for i in range(self.layers):
            cin, stride = (self.in_ch, self.stride) if i == 0 else (self.out_ch, 1)
            yield cin, round8(self.bottleneck * self.expansion), self.bottleneck, self.kernel, stride, i, True
            yield self.bottleneck, round8(self.out_ch * self.expansion), self.out_ch, self.kernel, 1, i, False


def parse(arch: str, in_channels: int = 3) -> list[Block]:
    """Blocks of a structure string (whitespace ignored); ValueError saying what is wrong otherwise."""
    if not isinstance(arch, str):
        raise ValueError(f"structure must be a string, got {type(arch).__name__}; {FORMAT_HELP}")
    s, pos, blocks = re.sub(r"\s+", "", arch), 0, []
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise ValueError(f"cannot read a block at position {pos} ({s[pos:pos + 30]!r}...); {FORMAT_HELP}")
        text, pos = m.group(0), m.end()
        conv = m.group(1) is not None
        args = m.group(2) if conv else m.group(5)
        try:
            nums = [int(a) for a in args.split(",")]
        except ValueError:
            raise ValueError(f"{text}: arguments must be integers; {FORMAT_HELP}") from None
        if len(nums) != (4 if conv else 5) or min(nums) < 1:
            raise ValueError(f"{text}: needs {4 if conv else 5} positive integers; {FORMAT_HELP}")
        if conv:
            kernel, (cin, cout, stride, layers) = int(m.group(1)), nums
            block = Block(kernel, cin, cout, stride, layers)
            if kernel not in CONV_KERNELS:
                raise ValueError(f"{text}: conv kernel must be one of {CONV_KERNELS}; {FORMAT_HELP}")
        else:
            expansion, kernel = int(m.group(3)), int(m.group(4))
            cin, cout, stride, bottleneck, layers = nums
            block = Block(kernel, cin, cout, stride, layers, expansion, bottleneck)
            if expansion not in EXPANSIONS or kernel not in IDW_KERNELS:
                raise ValueError(f"{text}: SuperResIDW needs E in {EXPANSIONS} and K in {IDW_KERNELS}; {FORMAT_HELP}")
        expected = blocks[-1].out_ch if blocks else in_channels
        if block.in_ch != expected:
            where = "the previous block's out" if blocks else "the image channels"
            raise ValueError(f"{text}: in_channels {block.in_ch} != {expected} ({where}); {FORMAT_HELP}")
        blocks.append(block)
    if not blocks:
        raise ValueError(f"empty structure string; {FORMAT_HELP}")
    return blocks
