"""zico_fast.proxies: ZiCo unchanged bit for bit, every added proxy against a plain re-derivation of
its definition on the same network and batches, the ensemble's population semantics, and errors."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

import zico_fast
from zico_fast.errors import ZiCoUserError
from zico_fast.proxies import ALL, PopulationRanks, compute, rank_aggregate, resolve_names
from zico_fast.proxies.split import split_of
from zico_fast.spaces.nb201 import NB201Space

ARCHS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
         "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"]
SPACE = NB201Space(C=4, N=1, resolution=16)


def batches(n=2, size=24, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 16, 16, generator=gen), torch.randint(0, 10, (size,), generator=gen))
            for _ in range(n)]


def model(arch, seed=0):
    torch.manual_seed(seed)
    return SPACE.build(arch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_batches", [2, 3])
def test_zico_value_is_bit_identical_to_zico_score(arch, num_batches):
    data = batches(num_batches)
    expected = zico_fast.zico_score(model(arch), data).score
    values = compute(model(arch), data, "all", cost=SPACE.cost(arch))
    assert values["zico"] == expected  # exact equality, not approx
    assert compute(model(arch), data, ("zico",)) == {"zico": expected}


def test_model_is_handed_back_unchanged_and_without_hooks():
    net = model(ARCHS[0])
    before = copy.deepcopy(net.state_dict())
    compute(net, batches(), "all", cost=SPACE.cost(ARCHS[0]))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert all(not getattr(p, "_post_accumulate_grad_hooks", None) for p in net.parameters())


def test_every_proxy_is_the_same_inside_no_grad():
    net, data = model(ARCHS[0]), batches()
    plain = compute(net, data, "all", cost=SPACE.cost(ARCHS[0]))
    with torch.no_grad():  # e.g. called from evaluation code
        assert compute(net, data, "all", cost=SPACE.cost(ARCHS[0])) == plain


def _weights(net):
    return [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _grads_per_batch(net, data):
    net.train()
    out = []
    for x, y in data:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        out.append([w.grad.detach().double().clone() if w.grad is not None else None for w in _weights(net)])
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_proxies_match_their_definitions(arch):
    data = batches()
    values = compute(model(arch), data, ("grad_norm", "snip", "gsnr"))
    net = model(arch)
    grads = _grads_per_batch(net, data)
    first = [g for g in grads[0] if g is not None]
    weights = [w.detach().double() for w, g in zip(_weights(net), grads[0]) if g is not None]
    assert values["grad_norm"] == pytest.approx(sum(float(g.norm()) for g in first), rel=1e-9)
    assert values["snip"] == pytest.approx(sum(float((g * w).abs().sum()) for g, w in zip(first, weights)), rel=1e-9)
    gsnr = 0.0
    for g1, g2 in zip(grads[0], grads[1]):
        if g1 is None:
            continue
        mean, var = (g1 + g2) / 2, ((g1 - g2) / 2) ** 2
        total = float((mean[var > 0] ** 2 / var[var > 0]).sum())
        gsnr += math.log(total) if total > 0 else 0.0
    assert values["gsnr"] == pytest.approx(gsnr, rel=1e-6)


def test_naswot_matches_the_naslib_kernel():
    arch, data = ARCHS[0], batches()
    value = compute(model(arch), data, ("naswot",))["naswot"]
    net, codes = model(arch), []
    hooks = [m.register_forward_hook(lambda m, i, o: codes.append((i[0] > 0).flatten(1).double()))
             for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    net.train()
    net(data[0][0])
    for h in hooks:
        h.remove()
    kernel = sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes)  # every ReLU counted, duplicates included
    assert value == pytest.approx(float(torch.linalg.slogdet(kernel)[1]), rel=1e-12)


def _features(net, x):
    """Stem output, then every cell's output (the AZ-NAS feature list for NB201)."""
    net.train()
    feats = [net.stem(x)]
    for cell in net.cells:
        feats.append(cell(feats[-1]))
    return feats


def _entropy(f):
    b, c = f.shape[:2]
    x = f.detach().double().permute(0, 2, 3, 1).reshape(-1, c)
    x = x - x.mean(0)
    s = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


@pytest.mark.parametrize("arch", ARCHS)
def test_az_nas_proxies_match_their_definitions(arch):
    data = batches()
    values = compute(model(arch), data, ("expressivity", "progressivity", "trainability"))
    entropies = [_entropy(f) for f in _features(model(arch), data[0][0])]
    assert values["expressivity"] == pytest.approx(sum(entropies), rel=1e-5)
    assert values["progressivity"] == pytest.approx(min(np.diff(entropies)), rel=1e-4, abs=1e-5)
    gen = torch.Generator().manual_seed(0)  # TRAINABILITY_SEED; vectors drawn in block order
    feats, scores = _features(model(arch), data[0][0]), []
    for i in range(1, len(feats)):
        g_out = torch.randint(0, 2, feats[i].shape, generator=gen, dtype=feats[i].dtype) * 2 - 1
        (g_in,) = torch.autograd.grad(feats[i], feats[i - 1], g_out, retain_graph=True)
        if g_in.shape[-1] != g_out.shape[-1]:
            g_in = F.pixel_unshuffle(g_in, 2)
        c_in, c_out = g_in.shape[1], g_out.shape[1]
        a = g_in.permute(0, 2, 3, 1).reshape(-1, c_in).double()
        b = g_out.permute(0, 2, 3, 1).reshape(-1, c_out).double()
        s = float(torch.linalg.svdvals(a.T @ b / b.shape[0]).max())
        scores.append(2 - s - 1 / (s + 1e-6))
    assert values["trainability"] == pytest.approx(float(np.mean(scores)), rel=1e-4)


def test_zico_bc_is_zico_minus_the_structural_term():
    arch, data = ARCHS[0], batches()
    result = zico_fast.zico_score(model(arch), data)
    net, shapes = model(arch), {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, output.shape)  # returns None: the output is left as it is
        return hook

    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(record(name))
    net(data[0][0])
    correction = 0.0
    for name in result.layer_terms:
        s = shapes[name]
        correction += math.log((s[2] * s[3] if len(s) == 4 else 1) / math.sqrt(s[1]))
    value = compute(model(arch), data, ("zico_bc",))["zico_bc"]
    assert value == pytest.approx(result.score - correction, rel=1e-12)


def test_cost_proxies_need_no_pass_and_come_from_the_space():
    cost = SPACE.cost(ARCHS[0])
    assert compute(None, [], ("params", "flops"), cost=cost) == {"params": cost.params, "flops": cost.flops}
    with pytest.raises(ZiCoUserError, match="cost=space.cost"):
        compute(model(ARCHS[0]), batches(), ("zico", "params"))


def test_names():
    assert resolve_names("all") == ALL
    assert resolve_names("zico, naswot,zico") == ("zico", "naswot")
    assert resolve_names(("all", "ensemble")) == ALL
    with pytest.raises(ZiCoUserError, match="unknown proxy 'zen'"):
        resolve_names("zico,zen")
    with pytest.raises(ZiCoUserError, match="no proxy chosen"):
        resolve_names("")


def test_rank_aggregate_is_azs_sum_of_log_rank_over_m():
    cols = {"a": [3.0, 1.0, 2.0, 2.0], "b": [0.1, float("nan"), 0.3, 0.2]}
    got = rank_aggregate(cols, members=("a", "b"))
    ra, rb = rankdata([3, 1, 2, 2]), np.array([2.0, 1.0, 4.0, 3.0])  # NaN ranks lowest
    np.testing.assert_allclose(got, np.log(ra / 4) + np.log(rb / 4))
    with pytest.raises(ValueError, match="needs proxies"):
        rank_aggregate(cols, members=("a", "zico"))


def test_population_fitness_equals_the_batch_aggregate_in_any_insertion_order():
    rng = np.random.default_rng(0)
    rows = [{"a": float(rng.integers(0, 5)), "b": float(rng.normal())} for _ in range(40)]
    expected = rank_aggregate({k: [r[k] for r in rows] for k in "ab"}, members=("a", "b"))
    for order in (range(40), rng.permutation(40)):
        pop = PopulationRanks(("a", "b"))
        for i in order:
            pop.add(rows[i])
        np.testing.assert_allclose([pop.fitness(r) for r in rows], expected)
    with pytest.raises(ValueError, match="not in the population"):
        pop.fitness({"a": 99.0, "b": 0.0})


def test_split_is_fixed_and_about_half():
    assert [split_of(i) for i in (0, 1, 2, 3)] == [split_of(i) for i in (0, 1, 2, 3)]
    halves = [split_of(i) for i in range(2000)]
    assert 900 < halves.count("fit") < 1100


def test_engine_names():
    from zico_fast.proxies import ENSEMBLE_MEMBERS, engine_names

    assert engine_names("zico") == (("zico",), False)
    assert engine_names("naswot") == (("zico", "naswot"), False)
    names, ensemble = engine_names("zico,ensemble")
    assert ensemble and names[0] == "zico" and set(ENSEMBLE_MEMBERS) <= set(names)
    assert engine_names("all") == (ALL, True)
    with pytest.raises(ZiCoUserError, match="unknown proxy"):
        engine_names("zico,zen")
