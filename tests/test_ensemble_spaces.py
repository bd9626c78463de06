"""The ensemble on every space: default members per space (FLOPs as the complexity term where it
ranks unlike params), one warning for a search on a space never validated, and AZ-NAS features
that start after the stem, never at the image."""
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import zico_fast
from zico_fast.engine import InProcessBackend, read_run_log
from zico_fast.proxies import ENSEMBLE_MEMBERS, compute
from zico_fast.proxies.activation_taps import BlockTap, default_blocks
from zico_fast.proxies.ensemble import SPACE_MEMBERS, UnvalidatedEnsembleWarning, members_for
from zico_fast.search import search
from zico_fast.spaces import get_space
from zico_fast.spaces.nb201 import NB201Space


def test_validated_spaces_keep_their_members_and_other_spaces_take_flops():
    assert members_for("nb201") == ENSEMBLE_MEMBERS == SPACE_MEMBERS["nb201"]
    assert members_for("darts") == ENSEMBLE_MEMBERS  # measured on NB301's fit half: params beat FLOPs there
    assert members_for("nb101") == ("zico", "params", "expressivity", "trainability")  # chosen on its fit half
    for name in ("mobilenet", "sss", "custom"):
        members = members_for(name)
        assert "flops" in members and "params" not in members
        assert [m for m in members if m != "flops"] == [m for m in ENSEMBLE_MEMBERS if m != "params"]


class OtherSpace(NB201Space):
    name = "other"  # an NB201 network under a name no measurement validated


def _search(space, log):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen))
               for _ in range(2)]
    return search(space, batches, iterations=3, log_path=log, population=3, generation=3, seed=1, threads=1,
                  backend=InProcessBackend(), fitness="ensemble")


@pytest.mark.parametrize("space, warned", [(OtherSpace(C=4, N=1, resolution=16), True),
                                           (NB201Space(C=4, N=1, resolution=16), False)])
def test_ensemble_search_warns_once_on_an_unvalidated_space(space, warned, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _search(space, tmp_path / "log.jsonl")
    ours = [w for w in caught if issubclass(w.category, UnvalidatedEnsembleWarning)]
    assert len(ours) == (1 if warned else 0)
    if warned:
        assert "other space" in str(ours[0].message) and "ensemble_per_space.py" in str(ours[0].message)
    header = read_run_log(tmp_path / "log.jsonl")[0]
    assert header["settings"]["fitness"]["members"] == list(members_for(space.name))


@pytest.mark.slow
def test_correlate_reports_the_ensemble_of_the_spaces_default_members(tmp_path):
    from zico_fast.correlate import correlate
    from zico_fast.proxies import ALL
    from zico_fast.truth import load_truth

    space = OtherSpace(C=4, N=1, resolution=16)  # NB201 rows under a space name with FLOPs as its default
    table = load_truth(Path(zico_fast.__file__).parent / "data" / "nb201_dev.csv", space, "cifar10_test_acc")
    data = [[(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))) for _ in range(2)]]
    result = correlate(space, data, log_path=tmp_path / "log.jsonl", truth=table,
                       sample=10, seed=0, threads=1, backend=InProcessBackend(), proxies=ALL)
    ensemble = result.report["correlations"]["ensemble"]
    assert ensemble["members"] == list(members_for("other")) != list(ENSEMBLE_MEMBERS)  # FLOPs, not params


def _feature_labels(model, x):
    tap = BlockTap(default_blocks(model), trainability=False, seed=0)
    tap.active = True
    model(x)
    tap.detach()
    return tap.labels


@pytest.mark.parametrize("name", ["nb101", "mobilenet"])
def test_spaces_whose_block_0_is_the_stem_start_their_features_at_its_output(name):
    space = get_space(name)
    model = space.build(space.random(random.Random(0)))
    labels = _feature_labels(model, torch.randn(2, 3, 32, 32))
    assert labels[0] == "the output of block 0" and "the input of block 0" not in labels


def test_a_stem_outside_the_blocks_is_still_the_first_feature():
    space = get_space("nb201")
    model = space.build(space.random(random.Random(0)))
    assert _feature_labels(model, torch.randn(2, 3, 32, 32))[0] == "the input of block 0"


def _entropy(f):
    x = f.detach().double().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    x = x - x.mean(0)
    p = torch.linalg.eigvalsh(x.T @ x / x.shape[0]).clamp_min(0)
    p = p / p.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


class StemFirst(nn.Module):
    """Blocks (the stem is block 0, as in NB101 and MobileNet) and a linear head."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU()) for c in (3, 6, 6)))
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        return self.head(self.blocks(x).mean((2, 3)))


def test_expressivity_leaves_the_image_out():
    torch.manual_seed(0)
    net = StemFirst()
    blocks = list(net.blocks)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]
    feats = [blocks[0](batches[0][0])]
    for block in blocks[1:]:
        feats.append(block(feats[-1]))
    values = compute(net, batches, ("expressivity", "progressivity"))
    entropies = [_entropy(f) for f in feats]
    assert values["expressivity"] == pytest.approx(sum(entropies), rel=1e-9)
    assert values["progressivity"] == pytest.approx(min(np.diff(entropies)), rel=1e-6, abs=1e-9)
    assert values["expressivity"] != pytest.approx(sum(entropies) + _entropy(batches[0][0]), rel=1e-6)


class TwoInputCell(nn.Module):
    """A DARTS-like cell: reads the outputs of the two cells before it (s0, s1)."""

    def __init__(self, c=6):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, s0, s1):
        return torch.relu(self.a(s0) + self.b(s1))


class DartsLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.cells = nn.ModuleList(TwoInputCell() for _ in range(3))
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1.mean((2, 3)))


def _trainability_reference(net, x, previous_of):
    """AZ-NAS's mean of 2 - s - 1/(s + 1e-6) over cells, each cell's Jacobian taken with respect to
    the feature `previous_of(k, states)` picks (Rademacher vectors drawn in cell order, seed 0)."""
    gen, terms = torch.Generator().manual_seed(0), []
    states = [net.stem(x)]
    s0 = s1 = states[0]
    for k, cell in enumerate(net.cells):
        out = cell(s0, s1)
        wrt = previous_of(k, states)
        g_out = torch.randint(0, 2, out.shape, generator=gen, dtype=out.dtype) * 2 - 1
        (g_in,) = torch.autograd.grad(out, wrt, g_out, retain_graph=True)
        a = g_in.permute(0, 2, 3, 1).reshape(-1, 6).double()
        b = g_out.permute(0, 2, 3, 1).reshape(-1, 6).double()
        s = float(torch.linalg.svdvals(a.T @ b / b.shape[0]).max())
        terms.append(2 - s - 1 / (s + 1e-6))
        states.append(out)
        s0, s1 = s1, out
    return float(np.mean(terms))


def test_trainability_pulls_back_to_the_previous_cell_when_a_cell_reads_two():
    import copy

    torch.manual_seed(0)
    net = DartsLike()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen)) for _ in range(2)]
    x = batches[0][0]
    previous = _trainability_reference(copy.deepcopy(net), x, lambda k, states: states[k])
    two_back = _trainability_reference(copy.deepcopy(net), x, lambda k, states: states[max(k - 1, 0)])
    value = compute(net, batches, ("trainability",))["trainability"]
    assert value == pytest.approx(previous, rel=1e-5)
    assert value != pytest.approx(two_back, rel=1e-3)  # s0, what the first input alone would give
