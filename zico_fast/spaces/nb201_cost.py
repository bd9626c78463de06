"""NB201 networks' parameters and FLOPs, counted analytically (no network is built): what the search
budget and every record's cost use. Only the numbers of each op kind in the cell matter."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)  # a search asks twice per candidate (budget, record); 84 op mixes
def network_counts(C: int, N: int, resolution: int, num_classes: int, pools: int, conv3: int,
                   conv1: int) -> tuple[int, int, int]:
    """(params, MACs, tensorwatch FLOPs) of a network whose cell has `pools` avg_pool_3x3, `conv3`
    nor_conv_3x3 and `conv1` nor_conv_1x1 edges: see NB201Space.cost and naslib_flops."""
    params = macs = tw = 0  # tw: the tensorwatch convention of naslib_flops

    def relu_conv_bn(cin: int, cout: int, k: int, in_px: int, out_px: int, times: int = 1) -> None:
        nonlocal params, macs, tw
        params += times * (cin * cout * k * k + 2 * cout)
        macs += times * (cin * cout * k * k + cout) * out_px
        tw += times * (cin * in_px + (cin * cout * k * k + 2 * cout) * out_px)

    pools, conv3, conv1 = N * pools, N * conv3, N * conv1  # every cell of a stage: N of each
    size = resolution
    params, macs = 3 * C * 9 + 2 * C, (27 * C + C) * size * size  # stem conv + BN
    tw = (27 * C + 2 * C) * size * size
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage:
            cin, in_px, size = c // 2, size * size, size // 2
            relu_conv_bn(cin, c, 3, in_px, size * size)
            relu_conv_bn(c, c, 3, size * size, size * size)
            params, macs = params + cin * c, macs + cin * c * size * size  # shortcut 1x1 conv
            tw += (4 * cin + cin * c) * size * size  # shortcut 2x2 avg pool + 1x1 conv
        px = size * size  # the stage's N cells, each with the same ops
        tw += 9 * c * px * pools
        relu_conv_bn(c, c, 3, px, px, conv3)
        relu_conv_bn(c, c, 1, px, px, conv1)
    c, px = 4 * C, size * size
    params += 2 * c + c * num_classes + num_classes  # last BN, Linear
    macs += c * px + c * num_classes
    tw += 3 * c * px + (size + 1) ** 2 * c + c * num_classes
    return params, macs, tw
