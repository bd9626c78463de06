"""DARTS / NAS-Bench-301 space: both spellings, canonical keys, malformed genotypes, NASLib's params and
FLOPs on all 425 bundled rows, the built networks against the analytic counts, sampling, mutation,
search (with resume) and correlate."""
import csv
import json
import random
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from zico_fast.cli import main
from zico_fast.spaces import get_space
from zico_fast.spaces.darts import DartsSpace
from zico_fast.spaces.darts_genotype import OPS, Genotype, canonical, parse
from zico_fast.spaces.darts_net import DartsNetwork, Zero
from zico_fast.truth import bundled_truth, default_truth_column, load_truth

TRUTH = Path(__file__).resolve().parents[1] / "zico_fast" / "data" / "nb301_dev.csv"
ROWS = list(csv.DictReader(TRUTH.open(newline="")))
SPACE = DartsSpace()
# The DARTS paper's cells (quark0/darts genotypes.py DARTS_V2) and P-DARTS's (chenxin061/pdarts).
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
PDARTS = ("Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),('sep_conv_3x3', 1), "
          "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), ('dil_conv_5x5', 4)], "
          "normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), "
          "('dil_conv_5x5', 2), ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), "
          "('dil_conv_5x5', 3)], reduce_concat=range(2, 6))")
WITH_NONE = DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('none', 0), ('dil_conv_3x3', 2)")


def test_all_425_rows_params_and_flops_are_naslibs():
    """Analytic counts (no network built): every row's params and FLOPs equal NASLib's exactly."""
    assert len(ROWS) == 425
    for row in ROWS:
        arch = SPACE.canonical(row["arch_string"])
        assert SPACE.canonical(row["genotype"]) == arch
        assert SPACE.cost(arch).params == round(float(row["naslib_params"]) * 1e6), row["arch_index"]
        assert SPACE.naslib_flops(arch) == round(float(row["naslib_flops"]) * 1e6), row["arch_index"]


def _hook_counts(model: torch.nn.Module, resolution: int) -> tuple[int, int]:
    """(MACs as Cost.flops counts them, FLOPs in NASLib's convention) of one image, from the shapes the
    built network produces: an independent count of what darts_cost derives from the genotype."""
    macs = naslib = 0

    def hook(module, inputs, output):
        nonlocal macs, naslib
        n = output.numel()
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs, naslib = macs + k * n, naslib + k * n
        elif isinstance(module, torch.nn.BatchNorm2d):
            macs, naslib = macs + n, naslib + (2 if module.affine else 1) * n
        elif isinstance(module, torch.nn.ReLU):
            naslib += inputs[0].numel()
        elif isinstance(module, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            naslib += 9 * n
        elif isinstance(module, torch.nn.AdaptiveAvgPool2d):
            _, c, h, w = inputs[0].shape
            naslib += c * (h + 1) * (w + 1)
        elif isinstance(module, torch.nn.Linear):
            weights = module.in_features * module.out_features
            macs, naslib = macs + weights, naslib + weights

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return macs, naslib, logits.shape


@pytest.mark.parametrize("space", [DartsSpace(), DartsSpace(network="darts", C=8, layers=5, num_classes=7),
                                   DartsSpace(C=6, layers=4, resolution=16)])
def test_built_networks_match_the_analytic_counts(space):
    rng = random.Random()
    for arch in [DARTS_V2, WITH_NONE, PDARTS, ROWS[rng.randrange(len(ROWS))]["arch_string"], space.random(rng)]:
        model = space.build(arch)
        cost = space.cost(arch)
        assert sum(p.numel() for p in model.parameters()) == cost.params, arch
        macs, naslib, shape = _hook_counts(model, space.resolution)
        assert (macs, naslib) == (cost.flops, space.naslib_flops(arch)), arch
        assert shape == (1, space.num_classes) and cost.depth == space.layers


def test_the_darts_papers_evaluation_network():
    """C=36, 20 cells, no auxiliary head: DARTS (V2) has 3,349,342 parameters (the 3.3M of the DARTS paper),
    P-DARTS 3,433,798 (chenxin061/pdarts issue 7 counts DARTS's NetworkCIFAR with --auxiliary off)."""
    space = DartsSpace(network="darts")
    assert (space.C, space.layers) == (36, 20)
    assert space.cost(DARTS_V2).params == 3_349_342
    assert space.cost(PDARTS).params == 3_433_798
    model = space.build(DARTS_V2)
    assert sum(p.numel() for p in model.parameters()) == 3_349_342
    sizes = []
    for cell in model.cells:
        cell.register_forward_hook(lambda module, inputs, output: sizes.append(tuple(output.shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    # reductions at cells 6 and 13 (20 // 3, 2 * 20 // 3); a cell outputs 4 nodes of C, 2C, 4C channels
    assert sizes == [(144, 32, 32)] * 6 + [(288, 16, 16)] * 7 + [(576, 8, 8)] * 7


def test_both_spellings_round_trip_and_equal_cells_are_equal():
    for row in ROWS[:60]:
        arch = SPACE.canonical(row["arch_string"])
        assert SPACE.canonical(arch) == arch
        assert SPACE.canonical(SPACE.compact(arch)) == arch
        assert SPACE.canonical(str(SPACE.compact(arch))) == arch
        assert SPACE.canonical(json.dumps(SPACE.compact(arch))) == arch  # JSON lists of lists
    darts_genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")  # DARTS's own type
    v2 = parse(DARTS_V2)
    assert SPACE.canonical(darts_genotype(list(v2.normal), range(2, 6), list(v2.reduce), range(2, 6))) \
        == SPACE.canonical(DARTS_V2) == SPACE.canonical(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)"))
    swapped = DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('dil_conv_3x3', 2), ('skip_connect', 0)")
    assert swapped != DARTS_V2 and SPACE.canonical(swapped) == SPACE.canonical(DARTS_V2)


def test_renumbered_nodes_are_one_architecture():
    """Nodes 2 and 3 of a cell read only the inputs, so swapping them (and every reference to them) is
    the same cell; the canonical spelling, costs and counts agree."""
    cell = (("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 0), ("dil_conv_5x5", 1),
            ("avg_pool_3x3", 2), ("sep_conv_5x5", 3), ("dil_conv_3x3", 3), ("skip_connect", 4))
    swap = {0: 0, 1: 1, 2: 3, 3: 2, 4: 4}
    renumbered = cell[2:4] + cell[0:2] + tuple((op, swap[s]) for op, s in cell[4:])
    a, b = Genotype(cell, cell), Genotype(renumbered, cell)
    assert a != b and canonical(a) == canonical(b)
    assert SPACE.cost(a) == SPACE.cost(b) and SPACE.naslib_flops(a) == SPACE.naslib_flops(b)
    distinct = {canonical(parse(r["arch_string"])) for r in ROWS}
    assert len(distinct) == len(ROWS)  # the bundled rows are 425 different architectures


def test_compact_has_no_none_and_none_builds_a_zero_edge():
    with pytest.raises(ValueError, match="no 'none' op"):
        SPACE.compact(WITH_NONE)
    model = DartsSpace(C=4, layers=4).build(WITH_NONE)  # cells N R R N
    assert sum(isinstance(m, Zero) for m in model.modules()) == 2  # the normal cell's none edge, in both normal cells


@pytest.mark.parametrize("arch, message", [
    (DARTS_V2.replace("'sep_conv_3x3', 0", "'conv_7x7', 0", 1),
     r"normal cell, node 2 \(edge 1 of 8\): unknown op 'conv_7x7'"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"),
     r"normal cell, node 5 \(edge 8 of 8\): input 5 is not an earlier node \(0..4\)"),
    (DARTS_V2.replace("('skip_connect', 2), ('max_pool_3x3', 1)", "('skip_connect', 1), ('max_pool_3x3', 1)"),
     "reduce cell, node 3: both edges read node 1"),
    (DARTS_V2.replace(", ('dil_conv_3x3', 2)]", "]"), "the normal cell has 7 edges; it needs 8"),
    (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[4, 5]"), r"reduce_concat is \[4, 5\]"),
    (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "Genotype lacks reduce_concat"),
    (DARTS_V2.replace("normal_concat=", "normal_concat=[2, 3, 4, 5], normal_concat="), "unknown or given twice"),
    (DARTS_V2.replace("('sep_conv_3x3', 0)", "(__import__('os').remove('x'), 0)", 1),  # parsed, never run
     "the normal cell must be a literal list"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=list(range(2, 6))"),
     "normal_concat must be the literal list"),
    (DARTS_V2 + "; 1", "not well-formed Genotype"),
    ("Genotyp" + DARTS_V2[8:], "cannot read a DARTS architecture"),
    (DARTS_V2 + " + " + DARTS_V2, "not one Genotype"),
    ("Genotype(" + "[" * 500 + "]" * 500 + ")", "not well-formed Genotype"),  # nesting past the parser's limit
    ("[[(0, 1)] * 8, [(0, 1)] * 8]", "may hold only numbers, commas and brackets"),
    (str([[(0, 7)] + [(1, 0)] * 7, [(1, 0)] * 8]),
     r"normal cell, node 2 \(edge 1 of 8\): op index 7 is not one of 0..6"),
    ("[" + ", ".join(["[" + ", ".join(["(0, 1), (1, 2)"] * 4) + "]"] * 3) + "]", "must hold 2 cells"),
    (str([[(0, 1), (0, 2)] + [(0, 1), (1, 2)] * 3, [(0, 1), (1, 2)] * 4]),
     "normal cell, node 2: both edges read node 0"),
    (str([[(0, 1), (1, 2)] * 4, [(0, 1), (1, 2), (0, 1)]]), "the reduce cell has 3 edges"),
    ("x" * 20_000, "too long"),
    ("sep_conv_3x3", "cannot read a DARTS architecture from 'sep_conv_3x3'"),
    (3.5, "cannot read a DARTS architecture from a float"),
])
def test_malformed_genotypes_say_what_is_wrong(arch, message):
    with pytest.raises(ValueError, match=message):
        SPACE.canonical(arch)


def _single_changes(genotype: Genotype) -> set:
    """Every architecture one op or one input away from `genotype`, canonical."""
    children = set()
    for c, cell in enumerate(genotype.cells()):
        for position, (op, source) in enumerate(cell):
            node, partner = 2 + position // 2, cell[position ^ 1][1]
            edits = [(o, source) for o in OPS if o != op]
            edits += [(op, s) for s in range(node) if s not in (source, partner)]
            for edit in edits:
                cells = [list(x) for x in genotype.cells()]
                cells[c][position] = edit
                children.add(canonical(Genotype(*map(tuple, cells))))
    return children


def test_sampling_and_mutation():
    rng = random.Random(0)
    archs = [SPACE.random(rng) for _ in range(200)]
    again = random.Random(0)
    assert len(set(archs)) == 200 and archs == [SPACE.random(again) for _ in range(200)]
    ops = [op for arch in archs for cell in parse(arch).cells() for op, _ in cell]
    assert set(ops) == set(OPS)  # NAS-Bench-301's 7 ops, never `none`
    for arch in archs[:40]:
        assert SPACE.canonical(arch) == arch
        child = SPACE.mutate(arch, rng)
        assert SPACE.canonical(child) == child != arch
        assert parse(child) in _single_changes(parse(arch))
        two = SPACE.mutate(arch, rng, 2)
        assert two != arch and SPACE.canonical(two) == two
    with pytest.raises(ValueError, match="num_blocks must be in 1..28"):
        SPACE.mutate(DARTS_V2, rng, 29)


def test_build_is_the_constructors_network_under_one_seed():
    from test_fast_build import assert_same_network

    space = DartsSpace(C=4, layers=4)
    for arch in [DARTS_V2, WITH_NONE, space.random(random.Random())]:
        torch.manual_seed(5)
        expected = DartsNetwork(parse(space.canonical(arch)), 4, 4, 10, False, True).train()
        torch.manual_seed(5)
        assert_same_network(space.build(arch), expected)
        assert_same_network(space.build(arch, seed=5), expected)


def test_registry_truth_defaults_and_bad_options():
    assert isinstance(get_space("darts"), DartsSpace)
    assert default_truth_column("darts") == "cifar10_val_acc" and bundled_truth("darts") == TRUTH
    truth = load_truth(TRUTH, SPACE, "cifar10_val_acc")
    assert len(truth.rows) == 425 and {"naslib_params", "naslib_nwot"} <= set(truth.compare_columns)
    with pytest.raises(ValueError, match="multiple of 4"):
        DartsSpace(resolution=30)
    with pytest.raises(ValueError, match="unknown DARTS network 'nasbench'"):
        DartsSpace(network="nasbench")


@pytest.mark.slow
def test_search_command_runs_and_resumes(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["search", "--space", "darts", "--iterations", "3", "--population", "2", "--out", str(tmp_path),
                "--no-progress", "--synthetic", "--batch-size", "2", "--device", "cpu", "--max-params", "900000"]
        assert main(args) == 0
        best = json.loads((tmp_path / "best.json").read_text())
        assert SPACE.canonical(best["arch"]) == best["arch"] and best["iterations"] == 3
        with (tmp_path / "candidates.csv").open(newline="") as f:
            archs = [row["arch"] for row in csv.DictReader(f)]
        assert len(archs) == 3 and all(SPACE.cost(arch).params <= 900_000 for arch in archs)
        assert main(args[:4] + ["4"] + args[5:]) == 0  # resumes: one more candidate
        assert json.loads((tmp_path / "best.json").read_text())["iterations"] == 4
        assert "resuming" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def test_a_malformed_arch_on_the_command_line_is_one_line(tmp_path, capsys):
    bad = DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)")
    assert main(["score", "--space", "darts", "--arch", bad, "--synthetic", "--batch-size", "2",
                 "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "normal cell, node 5 (edge 8 of 8): input 7 is not an earlier node" in err[0]
    assert not (tmp_path / "s.json").exists()
