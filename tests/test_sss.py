"""Tests of the NATS-Bench size space: NATS-Bench's published parameter counts, a network built the
way NATS-Bench's own constructors build it (written out here with plain torch.nn), indices, costs,
mutation, and the CLI (score, search with resume, correlate) on it."""
import csv
import itertools
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zico_fast
from zico_fast.cli import main
from zico_fast.proxies import compute
from zico_fast.spaces import get_space
from zico_fast.spaces.sss import CELL, CHANNELS, NUM_ARCHS, SSSSpace

SPACE = SSSSpace()
SMALL = ["--batch-size", "8", "--device", "cpu"]


from testing import one_thread  # noqa: E402,F401  (the fixture, used by every test here)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- NATS-Bench's network as its constructors make it (DynamicShapeTinyNet with 5 channels: N=1;
# InferCell from the genotype string; ResNetBasicblock at stride 2), one plain nn.Module per object,
# named as NATS-Bench names them. Written from the reference's structure, not from zico_fast's. ----
def ref_relu_conv_bn(cin, cout, kernel, stride=1):
    m = nn.Module()
    m.op = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))
    return m


def ref_genotype(text):
    """[[(op, input node), ...] per node] from '|op~0|+|op~0|op~1|+|...|'."""
    return [[(e.split("~")[0], int(e.split("~")[1])) for e in node.strip("|").split("|")] for node in text.split("+")]


def ref_infer_cell(cin, cout):
    m, layers, wiring = nn.Module(), nn.ModuleList(), []
    for node, entries in enumerate(ref_genotype(CELL), start=1):
        for op, src in entries:
            c = cin if src == 0 else cout
            if op == "nor_conv_3x3":
                layer = ref_relu_conv_bn(c, cout, 3)
            elif c == cout:  # skip_connect
                layer = nn.Identity()
            else:  # FactorizedReduce(c, cout, stride=1): relu, 1x1 conv, bn
                layer = nn.Module()
                layer.relu, layer.conv, layer.bn = nn.ReLU(), nn.Conv2d(c, cout, 1, bias=False), nn.BatchNorm2d(cout)
            wiring.append((node, src))
            layers.append(layer)
    m.layers, m.wiring = layers, wiring
    return m


def ref_resnet_block(cin, cout):
    m = nn.Module()
    m.conv_a, m.conv_b = ref_relu_conv_bn(cin, cout, 3, 2), ref_relu_conv_bn(cout, cout, 3)
    m.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))
    return m


def ref_network(channels, num_classes=10):
    m = nn.Module()
    m.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]))
    m.cells, previous = nn.ModuleList(), channels[0]
    for c, reduction in zip(channels, [False, True, False, True, False]):
        m.cells.append(ref_resnet_block(previous, c) if reduction else ref_infer_cell(previous, c))
        previous = c
    m.lastact = nn.Sequential(nn.BatchNorm2d(previous), nn.ReLU())
    m.global_pooling = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Linear(previous, num_classes)
    return m


def ref_forward(m, x):
    """DynamicShapeTinyNet.forward's logits, the cells evaluated as InferCell/ResNetBasicblock do."""
    def run(layer, t):
        if isinstance(layer, nn.Identity):
            return t
        if hasattr(layer, "op"):
            return layer.op(t)
        return layer.bn(layer.conv(F.relu(t)))

    x = m.stem(x)
    for cell in m.cells:
        if hasattr(cell, "conv_a"):
            x = cell.downsample(x) + cell.conv_b.op(cell.conv_a.op(x))
        else:
            nodes = [x]
            for node in (1, 2, 3):
                nodes.append(sum(run(layer, nodes[src]) for layer, (dst, src) in zip(cell.layers, cell.wiring)
                                 if dst == node))
            x = nodes[3]
    return m.classifier(m.global_pooling(m.lastact(x)).flatten(1))


def channels_of(arch):
    return [int(c) for c in arch.split(":")]


RANDOM_ARCHS = [SPACE.random(random.Random(seed)) for seed in range(6)]


@pytest.mark.parametrize("arch, published", [("8:8:8:8:8", 0.011714), ("8:8:16:40:40", 0.107826),
                                             ("64:64:64:64:64", 0.713674)])
def test_published_cifar10_parameter_counts(arch, published):
    # NATS-Bench reports CIFAR-10 params in millions (every parameter, BN and classifier included).
    counted = sum(p.numel() for p in SPACE.build(arch).parameters())
    assert counted == SPACE.cost(arch).params == round(published * 1e6)
    assert sum(p.numel() for p in ref_network(channels_of(arch)).parameters()) == counted


@pytest.mark.parametrize("arch", ["8:8:16:40:40", "64:8:56:16:24"] + RANDOM_ARCHS)
def test_build_is_the_reference_network_bit_for_bit(arch):
    torch.manual_seed(11)
    ref = ref_network(channels_of(arch))
    torch.manual_seed(11)
    ours = SPACE.build(arch)
    expected, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(expected)  # same names: NATS-Bench's trained state dicts load as they are
    for name in expected:
        assert got[name].shape == expected[name].shape and torch.equal(got[name], expected[name]), name
    assert all(torch.equal(a, b) for a, b in zip(SPACE.build(arch, seed=11).state_dict().values(), got.values()))
    assert ours.training
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(ours.double()(x), ref_forward(ref.double(), x), rtol=1e-12, atol=1e-12)


def test_index_is_natsbench_listing_order():
    # NATS-Bench lists the strings position by position, the first position slowest (traverse_net).
    listing = [":".join(map(str, p)) for p in itertools.product(CHANNELS, repeat=5)]
    assert list(SPACE.enumerate()) == listing and len(listing) == NUM_ARCHS == 32768
    for i in (0, 1, 9, 4242, NUM_ARCHS - 1):
        assert SPACE.index_of(listing[i]) == i and SPACE.arch_from_index(i) == listing[i]
    for bad in (-1, NUM_ARCHS, 1.0, True):
        with pytest.raises(ValueError):
            SPACE.arch_from_index(bad)


def count_macs(net, size):
    """Conv MACs, BN one per output element, Linear in*out: what cost().flops counts, from hooks."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            total[0] += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.BatchNorm2d):
            total[0] += output.numel()
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features

    for m in net.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.randn(1, 3, size, size))
    return total[0]


@pytest.mark.parametrize("arch", ["8:8:8:8:8", "64:64:64:64:64", "16:8:40:64:24"])
@pytest.mark.parametrize("num_classes, size", [(10, 32), (100, 16)])
def test_cost_equals_the_built_network(arch, num_classes, size):
    space = SSSSpace(num_classes=num_classes, resolution=size)
    net = space.build(arch)
    cost = space.cost(arch)
    assert cost.params == sum(p.numel() for p in net.parameters())
    assert cost.flops == count_macs(net, size) and cost.depth == 3
    assert net(torch.randn(2, 3, size, size)).shape == (2, num_classes)


def test_canonical_and_bad_strings():
    assert SPACE.canonical(" 08:16:24:32:40 ") == "8:16:24:32:40"
    for bad, says in [("8:16:24:32", "need 5"), ("8:16:24:32:41", "41"), ("8:16:x:32:40", "integer"),
                      (CELL, "need 5"), (7, "string")]:
        with pytest.raises(ValueError, match=says):
            SPACE.canonical(bad)
    with pytest.raises(ValueError, match="multiple of 4"):
        SSSSpace(resolution=30)


def test_mutate_changes_exactly_num_blocks_positions():
    rng = random.Random(0)
    for num_blocks in range(1, 6):
        for _ in range(40):
            parent = SPACE.random(rng)
            child = SPACE.mutate(parent, rng, num_blocks)
            assert SPACE.canonical(child) == child
            assert sum(a != b for a, b in zip(parent.split(":"), child.split(":"))) == num_blocks
    for bad in (0, 6):
        with pytest.raises(ValueError):
            SPACE.mutate("8:8:8:8:8", rng, bad)
    archs = {SPACE.random(rng) for _ in range(100)} | {SPACE.initial(rng) for _ in range(20)}
    assert len(archs) > 100


def test_budget_uses_the_analytic_cost():
    small, big = "8:8:8:8:8", "64:64:64:64:64"
    limit = SPACE.cost("32:32:32:32:32").params
    assert SPACE.within_budget(small, max_params=limit) and not SPACE.within_budget(big, max_params=limit)
    assert not SPACE.within_budget(small, max_flops=SPACE.cost(small).flops - 1)


def test_zico_bc_is_the_same_formula_on_sss():
    # ZiCo-BC subtracts log(H_l W_l / sqrt(C_l)) per scored layer; on SSS C_l varies with the position.
    arch = "8:16:24:32:40"
    c0, c1, c2, c3, c4 = channels_of(arch)
    layers = ([(32 * 32, c0)] * 6 + [(16 * 16, c1)] * 3 + [(16 * 16, c2)] * 6  # stem+cell, reduction, cell+skip
              + [(8 * 8, c3)] * 3 + [(8 * 8, c4)] * 6 + [(1, 10)])  # reduction, cell+skip, classifier
    gen = torch.Generator().manual_seed(3)
    data = [(torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]
    result = zico_fast.zico_score(SPACE.build(arch, seed=1), data)
    assert len(result.layer_terms) == len(layers)
    value = compute(SPACE.build(arch, seed=1), data, ("zico_bc",))["zico_bc"]
    assert value == pytest.approx(result.score - sum(math.log(hw / math.sqrt(c)) for hw, c in layers), rel=1e-12)


def test_cli_score_by_arch_and_index(tmp_path, capsys):
    arch = "8:16:32:40:64"
    assert main(["score", "--space", "sss", "--arch", arch, "--out", str(tmp_path / "a.json"), *SMALL]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["network"] == arch and report["params"] == SPACE.cost(arch).params and math.isfinite(report["score"])
    index = SPACE.index_of(arch)
    assert main(["score", "--space", "sss", "--index", str(index), "--out", str(tmp_path / "i.json"), *SMALL]) == 0
    assert json.loads((tmp_path / "i.json").read_text())["score"] == report["score"]
    capsys.readouterr()
    assert main(["score", "--space", "sss", "--arch", "8:16:32:40", *SMALL]) == 2
    assert "need 5" in capsys.readouterr().err


def test_cli_search_runs_within_budget_and_resumes(tmp_path, capsys):
    budget = SPACE.cost("24:24:24:24:24").params
    args = ["search", "--space", "sss", "--iterations", "3", "--population", "2", "--max-params", str(budget),
            "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(args) == 0
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["iterations"] == 3 and SPACE.cost(best["arch"]).params <= budget
    assert main(args[:4] + ["5"] + args[5:]) == 0  # more iterations: resumes, scores only 2 more
    assert json.loads((tmp_path / "best.json").read_text())["iterations"] == 5
    assert "resuming" in capsys.readouterr().err
    with open(tmp_path / "candidates.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(SPACE.cost(r["arch"]).params == int(r["params"]) <= budget for r in rows)


def test_cli_correlate_without_truth_says_where_the_table_comes_from(tmp_path, capsys):
    assert main(["correlate", "--space", "sss", "--out", str(tmp_path), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NATS-sss-v1_0-50262" in err and "--truth" in err


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # three rows on purpose
def test_cli_correlate_with_a_users_truth_file(tmp_path, capsys):
    # Plumbing only: the accuracies below are made up (none of NATS-Bench-SSS's are available offline).
    archs = ["8:8:8:8:8", "16:24:16:32:24", "8:64:8:64:8"]
    lines = ["arch_index,arch_string,cifar10_test_acc"]
    lines += [f"{SPACE.index_of(a)},{a},{acc}" for a, acc in zip(archs, (80.0, 85.0, 83.0))]
    (tmp_path / "sss.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["correlate", "--space", "sss", "--truth", str(tmp_path / "sss.csv"),
                 "--out", str(out), "--no-progress", *SMALL]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 3 and report["settings"]["space"]["name"] == "sss"
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + "\n5," + archs[1] + ",80\n")  # index 5 is 8:8:8:8:48
    assert main(["correlate", "--space", "sss", "--truth", str(bad), "--out", str(tmp_path / "o2"), *SMALL]) == 2
    assert "sss index" in capsys.readouterr().err


def test_registered_under_its_name():
    assert isinstance(get_space("sss", num_classes=100), SSSSpace)
