"""Tests of the NAS-Bench-201 space against the 725 NATS-Bench / NASLib rows bundled in zico_fast/data."""
import csv
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from zico_fast.spaces.nb201 import EDGES, NUM_ARCHS, OPS, NB201Space

CSV = Path(__file__).resolve().parents[1] / "zico_fast/data/nb201_dev.csv"
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SPACE = NB201Space()


@pytest.fixture(scope="module")
def rows():
    if not CSV.exists():
        pytest.skip(f"{CSV} (the bundled NB201 ground truth) is absent")
    with open(CSV) as f:
        return list(csv.DictReader(f))


def edges_of(arch):
    return [entry.split("~")[0] for entry in arch.replace("+", "").split("|") if entry]


def hook_count(net, size=32):
    """(MACs as cost() counts them, FLOPs as NASLib/tensorwatch counts them) from forward hooks."""
    counts = {"macs": 0, "tw": 0}

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            conv = output.numel() * module.in_channels * k // module.groups
            counts["macs"] += conv
            counts["tw"] += conv
        elif isinstance(module, nn.BatchNorm2d):
            counts["macs"] += output.numel()
            counts["tw"] += 2 * x.numel()
        elif isinstance(module, nn.ReLU):
            counts["tw"] += x.numel()
        elif isinstance(module, nn.AvgPool2d):
            counts["tw"] += output.numel() * module.kernel_size ** 2
        elif isinstance(module, nn.AdaptiveAvgPool2d):  # tensorwatch's (end - start + 1)^2 quirk
            counts["tw"] += x.shape[1] * (x.shape[2] + 1) * (x.shape[3] + 1)
        elif isinstance(module, nn.Linear):
            counts["macs"] += module.in_features * module.out_features
            counts["tw"] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        net(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return counts["macs"], counts["tw"]


def test_params_and_naslib_flops_match_all_rows(rows):
    assert len(rows) == 725
    for r in rows:
        arch = r["arch_string"]
        assert round(SPACE.cost(arch).params / 1e6, 6) == float(r["naslib_params"]), arch
        # naslib_flops is tensorwatch's count (BN, ReLU, pools included), reproduced exactly.
        assert SPACE.naslib_flops(arch) == round(float(r["naslib_flops"]) * 1e6), arch
        # cost().flops counts MACs only (conv, BN 1/element, Linear), so it is 0.8% to 40% below
        # NASLib's number on these rows; the big gaps are cells of avg_pool_3x3, which NASLib counts
        # as 9 FLOPs per output element.  The two rank the rows alike (Spearman 0.996).
        assert 0.005 < 1 - SPACE.cost(arch).flops / SPACE.naslib_flops(arch) < 0.41


def test_analytic_params_equal_built_model(rows):
    for r in rows[::12] + [{"arch_string": ALL_NONE}, {"arch_string": ALL_3X3}]:
        net = SPACE.build(r["arch_string"])
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        assert params == SPACE.cost(r["arch_string"]).params


def test_index_round_trip(rows):
    for r in rows:
        assert SPACE.index_of(r["arch_string"]) == int(r["arch_index"])
        assert SPACE.arch_from_index(int(r["arch_index"])) == r["arch_string"]
    # The checks NAS-Bench-201's generator asserted on its shuffled order.
    assert SPACE.arch_from_index(0) == ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|"
                                        "+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    assert SPACE.arch_from_index(123) == ("|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|"
                                          "+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    with pytest.raises(ValueError):
        SPACE.arch_from_index(NUM_ARCHS)


def test_enumerate_covers_space_in_index_order():
    archs = list(SPACE.enumerate())
    assert len(archs) == NUM_ARCHS == 15625 and len(set(archs)) == NUM_ARCHS
    for i in (0, 1, 777, 15624):
        assert SPACE.index_of(archs[i]) == i


MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"


@pytest.mark.parametrize("arch", [EXAMPLE, ALL_NONE, ALL_3X3, MIXED])
def test_flops_equal_hook_count(arch):
    macs, tw = hook_count(SPACE.build(arch))
    assert SPACE.cost(arch).flops == macs
    assert SPACE.naslib_flops(arch) == tw
    assert SPACE.cost(arch).depth == 15


def test_other_sizes_match_built_model():
    space = NB201Space(num_classes=100, C=8, N=2, resolution=16)
    net = space.build(EXAMPLE)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 100)
    assert sum(p.numel() for p in net.parameters()) == space.cost(EXAMPLE).params
    assert hook_count(net, 16) == (space.cost(EXAMPLE).flops, space.naslib_flops(EXAMPLE))


def test_mutate_changes_exactly_num_blocks_edges():
    rng = random.Random(0)
    for num_blocks in range(1, 7):
        for _ in range(50):
            parent = SPACE.random(rng)
            child = SPACE.mutate(parent, rng, num_blocks)
            assert SPACE.canonical(child) == child
            assert sum(a != b for a, b in zip(edges_of(parent), edges_of(child))) == num_blocks
    with pytest.raises(ValueError):
        SPACE.mutate(EXAMPLE, rng, 0)
    with pytest.raises(ValueError):
        SPACE.mutate(EXAMPLE, rng, 7)


def test_random_and_initial_are_valid_and_varied():
    rng = random.Random(1)
    archs = {SPACE.random(rng) for _ in range(200)} | {SPACE.initial(rng) for _ in range(20)}
    assert len(archs) > 200 and all(SPACE.canonical(a) == a for a in archs)


def test_canonical_reorders_entries_and_keeps_canonical_strings():
    assert SPACE.canonical(EXAMPLE) == EXAMPLE
    shuffled = ("|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|"
                "+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|")
    assert SPACE.canonical(shuffled) == EXAMPLE
    assert len(OPS) ** len(EDGES) == NUM_ARCHS


TAIL = "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.mark.parametrize("bad, words", [
    ("", "need 3"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "need 3"),
    ("|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|" + TAIL, "unknown op 'conv_5x5'"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|" + TAIL, "node 1 cannot take input from node 1"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|" + TAIL, "exactly one op from each"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|" + TAIL, "two ops from node 0"),
    ("nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|" + TAIL, "start and end with '|'"),
    ("|nor_conv_3x3-0|+|nor_conv_3x3~0|avg_pool_3x3~1|" + TAIL, "not 'op~input'"),
    (None, "must be a string"),
])
def test_bad_strings_raise_value_error(bad, words):
    for call in (SPACE.canonical, SPACE.build, SPACE.cost, SPACE.index_of):
        with pytest.raises(ValueError) as info:
            call(bad)
        assert words in str(info.value) and "expected '|op~0|" in str(info.value)


@pytest.mark.parametrize("arch", [EXAMPLE, ALL_NONE, "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|"])
def test_forward_backward(arch):
    torch.manual_seed(0)
    net = SPACE.build(arch)
    assert net.training
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    # Convs cut off from the output (all of them when node 3 has no path from the input) get no or
    # zero gradients; the classifier bias always gets one.
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.classifier.bias.grad.abs().sum() > 0
    if arch == EXAMPLE:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
