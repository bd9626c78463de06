"""NAS-Bench-101 space: every spelling, pruning, invalid cells, NASLib's params/FLOPs on all 300 bundled
rows, the built network against nasbench-pytorch, sampling, mutation, search and correlate."""
import csv
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from zico_fast.data import make_batches
from zico_fast.ranking import FewRowsWarning
from zico_fast.reference import gradient_stacks, zico_oracle
from zico_fast.scorer import zico_score
from zico_fast.search import search
from zico_fast.spaces import get_space
from zico_fast.spaces.nb101 import NB101Space
from zico_fast.spaces.nb101_cell import parse

TRUTH = Path(__file__).resolve().parents[1] / "zico_fast" / "data" / "nb101_dev.csv"
ROWS = list(csv.DictReader(TRUTH.open(newline="")))
SPACE = NB101Space()
# A 7-vertex, 9-edge cell with every feature: an uneven split of the output (feeders 2, 3, 5 get
# 43/43/42 channels), truncation (vertex 2 feeds 4), input projections to an interior vertex and to
# the output, a max-pool.
RICH = "input|conv3x3-bn-relu<0|conv1x1-bn-relu<1|maxpool3x3<1|conv3x3-bn-relu<2|conv1x1-bn-relu<4|output<0,2,3,5"


def test_all_300_rows_params_and_naslib_flops_analytically():
    assert len(ROWS) == 300
    for row in ROWS:
        arch = SPACE.canonical(row["arch_tuple"])
        assert arch == row["arch_string"]
        assert SPACE.cost(arch).params == round(float(row["naslib_params"]) * 1e6), arch
        assert SPACE.naslib_flops(arch) == round(float(row["naslib_flops"]) * 1e6), arch


def test_every_spelling_of_a_row_gives_the_same_canonical_string():
    for row in ROWS[:50]:
        matrix, ops = json.loads(row["matrix"]), json.loads(row["ops"])
        canonical = row["arch_string"]
        spellings = [row["arch_tuple"], tuple(json.loads(row["arch_tuple"].replace("(", "[").replace(")", "]"))),
                     np.array(json.loads(row["arch_tuple"].replace("(", "[").replace(")", "]"))),
                     (matrix, ops), (np.array(matrix), ops), json.dumps({"matrix": matrix, "ops": ops}), canonical]
        assert {SPACE.canonical(s) for s in spellings} == {canonical}


def test_round_trips():
    for arch in [RICH, "input|output<0", "input|maxpool3x3<0|output<1"] + [r["arch_string"] for r in ROWS[:30]]:
        assert SPACE.canonical(arch) == arch
        assert SPACE.canonical(SPACE.naslib_tuple(arch)) == arch
        assert SPACE.canonical(str(SPACE.naslib_tuple(arch))) == arch
        assert SPACE.canonical(SPACE.spec(arch)) == arch
    assert len(SPACE.naslib_tuple(RICH)) == 7 * 7 + 7 == 56
    assert SPACE.naslib_tuple("input|output<0") == (0, 1, 0, 0, 0, 1)


def test_pruning_drops_vertices_off_every_input_output_path():
    ops = ["input", "conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu", "output"]
    matrix = [[0, 1, 1, 0, 0],   # vertex 2 is fed by the input but feeds nothing: dead end
              [0, 0, 0, 0, 1],
              [0, 0, 0, 0, 0],
              [0, 0, 0, 0, 1],   # vertex 3 feeds the output but nothing feeds it: unreachable
              [0, 0, 0, 0, 0]]
    assert SPACE.canonical((matrix, ops)) == "input|conv3x3-bn-relu<0|output<1"
    assert SPACE.cost((matrix, ops)) == SPACE.cost("input|conv3x3-bn-relu<0|output<1")
    assert SPACE.spec((matrix, ops)) == ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])
    pruned_rows = [r for r in ROWS if len(SPACE.spec(r["arch_tuple"])[1]) < 7]
    assert pruned_rows, "the bundled rows include cells that NAS-Bench-101 prunes"


def _cell(edges, ops=("conv3x3-bn-relu",) * 5):
    matrix = [[int((i, j) in edges) for j in range(7)] for i in range(7)]
    return matrix, ["input", *ops, "output"]


CHAIN = {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)}


@pytest.mark.parametrize("arch, message", [
    (_cell(CHAIN | {(0, 2), (0, 3), (0, 4), (0, 5)}), "10 edges after pruning; NAS-Bench-101 allows at most 9"),
    (_cell({(0, 1), (2, 6)}), "disconnected: no path leads from the input to the output"),
    (_cell(CHAIN, ("conv5x5",) * 5), "unknown interior op 'conv5x5'"),
    (([[0, 1, 0], [0, 0, 0], [0, 1, 0]], ["input", "maxpool3x3", "output"]), "not strictly upper triangular"),
    (([[1, 1], [0, 0]], ["input", "output"]), "not strictly upper triangular"),
    (([[0] * 8 for _ in range(8)], ["input"] + ["maxpool3x3"] * 6 + ["output"]), "2..7 vertices"),
    (([[0, 1, 0], [0, 0, 1]], ["input", "maxpool3x3", "output"]), "must be square"),
    (([[0, 2], [0, 0]], ["input", "output"]), "only 0 and 1"),
    (([[0, 1], [0, 0]], ["input", "maxpool3x3", "output"]), "3 ops for 2 vertices"),
    (([[0, 1], [0, 0]], ["output", "input"]), "first op must be 'input'"),
    (tuple([0] * 55), "55 numbers"),
    ("(0, 1, 0, 0, 0, 7)", "op index 7"),
    ("(0, 1, 0, x, 0, 1)", "only 0/1 entries"),
    ("input|conv3x3<0|output<1", "unknown interior op 'conv3x3'"),
    ("input|maxpool3x3<1|output<1", "takes input from vertex 1"),
    ("input|maxpool3x3|output<1", "is not 'op<source"),
    ("maxpool3x3<0|output<1", "must start with 'input|'"),
    ('{"matrix": [[0, 1], [0, 0]]}', "not JSON with 'matrix' and 'ops'"),
    (3.5, "cannot read a NAS-Bench-101 cell from a float"),
])
def test_invalid_cells_say_what_is_wrong(arch, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SPACE.canonical(arch)


def test_channel_split_and_truncation_follow_nas_bench_101():
    cell = parse(RICH)
    # the first feeders of the output get the extra channels; the others take the widest vertex they feed
    assert cell.vertex_channels(128, 128) == [128, 43, 43, 43, 42, 42, 128]
    assert cell.vertex_channels(128, 256) == [128, 86, 86, 85, 85, 85, 256]


def test_module_hash_is_isomorphism_invariant():
    matrix, ops = SPACE.spec(RICH)
    n = len(ops)
    hashes = set()
    for order in itertools.permutations(range(1, n - 1)):  # relabel the interior vertices
        perm = [0, *order, n - 1]
        relabelled = [[matrix[perm[i]][perm[j]] for j in range(n)] for i in range(n)]
        if all(relabelled[i][j] == 0 for i in range(n) for j in range(i + 1)):  # still in topological order
            hashes.add(SPACE.module_hash((relabelled, [ops[p] for p in perm])))
    assert len(hashes) == 1


def test_module_hash_groups_rows_as_nas_bench_101_does():
    """The 300 rows hold 197 pruned spellings of 191 cells: NASLib sampled unpruned matrices and each
    row's accuracy is one of NAS-Bench-101's 3 training runs of the cell.  Rows with one hash carry at
    most 3 distinct accuracies, so the hash merges only spellings that NAS-Bench-101 trained as one cell;
    isomorphic spellings can differ in size (which vertex gets the extra channel follows vertex order)."""
    accuracies, params = {}, {}
    for row in ROWS:
        key = SPACE.module_hash(row["arch_string"])
        accuracies.setdefault(key, set()).add(row["cifar10_val_acc"])
        params.setdefault(key, set()).add(SPACE.cost(row["arch_string"]).params)
    assert len({r["arch_string"] for r in ROWS}) == 197 and len(accuracies) == 191
    assert max(len(a) for a in accuracies.values()) == 3
    assert any(len(p) > 1 for p in params.values())


def test_sampling_and_mutation_give_valid_distinct_cells():
    rng = random.Random(0)
    archs = [SPACE.random(rng) for _ in range(100)]
    assert len(set(archs)) > 60  # pruning maps many matrices to the same small cells
    again = random.Random(0)
    assert archs == [SPACE.random(again) for _ in range(100)]
    for arch in archs:
        assert SPACE.canonical(arch) == arch
        for blocks in (1, 2, 3):
            child = SPACE.mutate(arch, rng, blocks)
            assert SPACE.canonical(child) == child != arch
    grown = {len(SPACE.spec(SPACE.mutate("input|output<0", rng))[1]) for _ in range(50)}
    assert max(grown) > 2, "mutation must be able to add vertices to a pruned cell"
    with pytest.raises(ValueError, match="num_blocks must be in 1..26"):
        SPACE.mutate(RICH, rng, 0)


@pytest.mark.parametrize("row", [0, 5, 120])
def test_built_network_matches_the_analytic_cost(row):
    arch = ROWS[row]["arch_string"]
    assert sum(p.numel() for p in SPACE.build(arch).parameters()) == SPACE.cost(arch).params


def test_built_network_equals_nasbench_pytorch():
    """Oracle: the `nasbench-pytorch` package's Network (the build NASLib's numbers come from), with
    its weights copied in; its Placeholder modules hold an unused scalar parameter each, which are
    left out (they are why its own parameter count exceeds NASLib's by 2-5 per cell)."""
    oracle = pytest.importorskip("nasbench_pytorch.model")
    torch.manual_seed(0)
    small = NB101Space(stem=16)  # the same cells at an eighth of the width keeps this fast
    for arch in [RICH, "input|output<0", "input|maxpool3x3<0|output<0,1"] + [r["arch_string"] for r in ROWS[:12]]:
        matrix, ops = small.spec(arch)
        reference = oracle.Network((np.array(matrix), ops), stem_out_channels=16).train()
        mine = small.build(arch)
        wanted = [p for name, p in reference.named_parameters() if not name.endswith(".a") and p.numel()]
        assert [p.shape for p in wanted] == [p.shape for p in mine.parameters()], arch
        with torch.no_grad():
            for src, dst in zip(wanted, mine.parameters()):
                dst.copy_(src)
        x = torch.randn(4, 3, 32, 32)
        torch.testing.assert_close(mine(x), reference(x), rtol=0, atol=0)


def test_build_on_meta_then_materialize_is_the_constructors_network():
    """build(): the constructors' bits under one torch seed, the same draws from the generator, and
    with seed= the manual_seed bits without touching it; fresh random cells every run."""
    from test_fast_build import assert_same_network
    from zico_fast.spaces.nb101 import NB101Network

    rng = random.Random()
    small = NB101Space(stem=16)
    for arch in [RICH, "input|output<0"] + [small.random(rng) for _ in range(3)]:
        seed = rng.getrandbits(63)
        torch.manual_seed(seed)
        expected = NB101Network(parse(arch), small.stem, small.stacks, small.cells_per_stack, small.num_classes).train()
        after = torch.get_rng_state()
        torch.manual_seed(seed)
        assert_same_network(small.build(arch), expected)
        assert torch.equal(torch.get_rng_state(), after), arch
        assert_same_network(small.build(arch, seed=seed), expected)
        assert torch.equal(torch.get_rng_state(), after), arch  # the seeded build drew nothing from it


def test_zico_of_an_nb101_network_matches_the_float64_oracle():
    space = NB101Space(stem=8, cells_per_stack=1)
    torch.manual_seed(1)
    model = space.build(RICH)
    batches = make_batches(batch_size=8, num_batches=2, seed=3)
    expected, _ = zico_oracle(gradient_stacks(model, batches))
    assert zico_score(model, batches).score == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_registry_and_search_with_budgets(tmp_path):
    assert isinstance(get_space("nb101"), NB101Space)
    space = NB101Space(stem=8, cells_per_stack=1)
    batches = make_batches(batch_size=4, num_batches=2, seed=0)
    budget = space.cost("input|conv3x3-bn-relu<0|output<1").params
    for strategy in ("evolution", "random"):
        log = tmp_path / f"{strategy}.jsonl"
        result = search(space, batches, iterations=6, population=4, strategy=strategy, max_params=budget,
                        log_path=log, threads=1)
        assert result.iterations == 6 and result.failed == 0
        candidates = [r["arch"] for r in result.records if r.get("arch")]
        assert len(candidates) == 6 and all(space.cost(arch).params <= budget for arch in candidates)


@pytest.mark.slow
def test_small_correlate_run(tmp_path):
    from zico_fast.correlate import correlate

    with pytest.warns(FewRowsWarning):
        # No table or column named: the space's bundled table and its only accuracy, validation.
        result = correlate(SPACE, [make_batches(None, 4, 2, 0)], log_path=tmp_path / "scores.jsonl",
                           sample=4, threads=1)
    report = result.report
    assert report["truth_file"] == TRUTH.name and report["truth_column"] == "cifar10_val_acc"
    assert {"zico", "params", "naslib_params", "naslib_synflow"} <= set(report["correlations"])
    assert report["correlations"]["zico"]["n"] == 4 and all(np.isfinite(result.zico))
    # the space's params are NASLib's, so they rank identically
    assert report["correlations"]["params"] == report["correlations"]["naslib_params"]


def test_search_command_accepts_the_space():
    from zico_fast.cli import build_parser

    assert build_parser().parse_args(["search", "--space", "nb101", "--out", "runs/x"]).space == "nb101"


def _hook_counts(model: torch.nn.Module, resolution: int) -> tuple[int, int]:
    """(MACs as Cost.flops counts them, FLOPs as NASLib's tensorwatch-style counter) of one image,
    from the shapes the built network actually produces."""
    macs = naslib = 0

    def hook(module, inputs, output):
        nonlocal macs, naslib
        n = output.numel()
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            macs, naslib = macs + k * n, naslib + k * n
        elif isinstance(module, torch.nn.BatchNorm2d):
            macs, naslib = macs + n, naslib + 2 * n
        elif isinstance(module, torch.nn.ReLU):
            naslib += n
        elif isinstance(module, torch.nn.MaxPool2d):
            naslib += module.kernel_size ** 2 * n
        elif isinstance(module, torch.nn.Linear):
            weights = module.in_features * module.out_features
            macs, naslib = macs + weights, naslib + weights

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return macs, naslib


def test_analytic_costs_equal_counts_on_the_built_network():
    space = NB101Space(stem=16, resolution=16)
    for arch in [RICH, "input|output<0"] + [r["arch_string"] for r in ROWS[:20]]:
        assert _hook_counts(space.build(arch), 16) == (space.cost(arch).flops, space.naslib_flops(arch)), arch
