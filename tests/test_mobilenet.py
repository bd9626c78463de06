"""Tests of the MobileNet-style (Zen-NAS / ZiCo SuperResIDW) search space."""
import random

import pytest
import torch
from torch import nn

from zico_fast.spaces.mobilenet import INITIAL, ZICO_450M, InvertedUnit, MobileNetSpace, parse

# A hand-made structure that exercises what the published ones do not: a 5x5 stem of two layers,
# stride-1 blocks whose shape is kept (identity shortcuts), a bottleneck that is not a multiple of 8
# (hidden width rounded like Zen-NAS), and a 1x1 conv that is not the last block.
SYNTHETIC = ("SuperConvK5BNRELU(3,24,2,2)SuperResIDWE1K3(24,24,1,24,2)SuperResIDWE6K5(24,40,2,20,1)"
             "SuperConvK1BNRELU(40,48,1,1)SuperResIDWE4K7(48,48,1,48,3)SuperConvK1BNRELU(48,256,1,1)")


def hook_count(model: nn.Module, resolution: int) -> int:
    """Multiply-accumulates of Conv2d, BatchNorm2d and Linear for one image, measured by forward hooks."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        per_image = output[0].numel()
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += per_image * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.BatchNorm2d):
            total += per_image
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    model.eval()  # one image: BN in train mode would refuse 1x1 feature maps
    with torch.no_grad():
        model(torch.randn(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total


def random_structures(count, seed=0):
    space, rng = MobileNetSpace(random_steps=4, max_layers=14), random.Random(seed)
    return [space.random(rng) for _ in range(count)]


def test_round_trip_and_whitespace():
    space = MobileNetSpace()
    for arch in (ZICO_450M, INITIAL, SYNTHETIC, *random_structures(5)):
        assert space.canonical(arch) == arch
    spaced = ZICO_450M.replace(")S", ")\n  S").replace(",", ", ")
    assert space.canonical(spaced) == ZICO_450M
    assert [b.layers for b in parse(ZICO_450M)] == [1, 1, 1, 5, 5, 1]


def test_published_450m():
    space = MobileNetSpace()
    cost = space.cost(ZICO_450M)
    assert cost.depth == 14
    assert 430e6 < cost.flops <= 450e6  # 443.5M MACs with residual links, 432.6M without
    model = space.build(ZICO_450M)
    assert sum(p.numel() for p in model.parameters()) == cost.params
    assert hook_count(model, 32) == MobileNetSpace(resolution=32).cost(ZICO_450M).flops
    assert space.within_budget(ZICO_450M, max_flops=450e6, max_layers=14)
    assert not space.within_budget(ZICO_450M, max_flops=400e6)
    assert not space.within_budget(ZICO_450M, max_layers=13)
    assert not MobileNetSpace(max_layers=12).within_budget(ZICO_450M)


@pytest.mark.parametrize("resolution,no_reslink", [(32, False), (32, True), (64, False), (37, True)])
def test_cost_matches_built_model(resolution, no_reslink):
    space = MobileNetSpace(resolution=resolution, num_classes=10, no_reslink=no_reslink)
    for arch in (INITIAL, SYNTHETIC, *random_structures(3, seed=resolution)):
        model, cost = space.build(arch), space.cost(arch)
        assert sum(p.numel() for p in model.parameters()) == cost.params, arch
        assert hook_count(model, resolution) == cost.flops, arch


def test_budget_uses_deployed_network():
    scoring = MobileNetSpace(no_reslink=True)
    deployed = MobileNetSpace().cost(ZICO_450M)
    assert scoring.cost(ZICO_450M).flops < deployed.flops
    assert scoring.cost(ZICO_450M, reslink=True) == deployed
    assert not scoring.within_budget(ZICO_450M, max_flops=deployed.flops - 1)


def _widths_ok(blocks):
    stem_and_idw = [b for b in blocks if not (b.is_conv and b.kernel == 1)]
    return all(c % 8 == 0 and c >= 8 for b in stem_and_idw
               for c in ([b.out_ch] if b.is_conv else [b.out_ch, b.bottleneck]))


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_mutation_without_split(num_blocks):
    space, rng = MobileNetSpace(split_threshold=None), random.Random(num_blocks)
    for parent in (INITIAL, ZICO_450M):
        before = parse(parent)
        for _ in range(150):
            child = space.mutate(parent, rng, num_blocks=num_blocks)
            after = parse(child)  # also checks each block's in == previous out
            assert space.canonical(child) == child and _widths_ok(after)
            assert len(after) == len(before)
            assert str(after[-1]) == f"SuperConvK1BNRELU({after[-2].out_ch},2048,1,1)"  # only re-linked
            assert after[0].is_conv and after[0].kernel == before[0].kernel and after[0].layers == 1
            changed = 0
            for old, new in zip(before, after):
                assert new.stride == old.stride
                if not new.is_conv:
                    assert max(1, old.layers - 2) <= new.layers <= old.layers + 2
                changed += (old.out_ch, old.bottleneck, old.layers, old.kernel, old.expansion) != \
                           (new.out_ch, new.bottleneck, new.layers, new.kernel, new.expansion)
            assert changed <= num_blocks


def test_mutation_splits_deep_blocks_like_zen_nas():
    space, rng = MobileNetSpace(), random.Random(3)
    children = [parse(space.mutate(ZICO_450M, rng, num_blocks=2)) for _ in range(200)]
    assert all(b.layers < 6 for blocks in children for b in blocks)
    assert any(len(blocks) > len(parse(ZICO_450M)) for blocks in children)
    assert all(_widths_ok(blocks) for blocks in children)


def test_initial_and_random():
    space = MobileNetSpace(max_layers=14)
    assert space.canonical(space.initial(random.Random(0))) == INITIAL
    a, b = space.random(random.Random(7)), space.random(random.Random(7))
    assert a == b and a != INITIAL and space.cost(a).depth <= 14
    with pytest.raises(ValueError, match="no mutable block"):
        space.mutate("SuperConvK1BNRELU(3,8,1,1)", random.Random(0))


def test_no_reslink_removes_residual_adds():
    arch = SYNTHETIC
    plain, res = MobileNetSpace(no_reslink=True).build(arch), MobileNetSpace().build(arch)
    units = [m for m in plain.modules() if isinstance(m, InvertedUnit)]
    assert units and all(u.proj is None and u.shortcut == "none" for u in units)
    # Zen-NAS: a block's first unit always projects (ResBlockProj), later units only on a shape change.
    kinds = [m.shortcut for m in res.features[2:8]]  # SuperResIDWE1K3(24,24,1,24,2), SuperResIDWE6K5(24,40,2,20,1)
    assert kinds == ["proj", "identity", "identity", "identity", "proj", "proj"]
    # Forward hooks: without residual links a unit's output is exactly ReLU(body(input)).
    for model, expect_equal in ((plain, True), (res, False)):
        seen = []
        hooks = [u.register_forward_hook(lambda m, i, o: seen.append(torch.equal(o, torch.relu(m.body(i[0])))))
                 for u in model.modules() if isinstance(u, InvertedUnit)]
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert all(seen) if expect_equal else not any(seen)


@pytest.mark.parametrize("bad,why", [
    ("", "empty"),
    ("SuperConvK3BNRELU(3,16,2)", "4 positive integers"),
    ("SuperConvK3BNRELU(3,16,2,0)", "positive"),
    ("SuperConvK4BNRELU(3,16,2,1)", "conv kernel"),
    ("SuperConvK3BNRELU(3,16,2,1)SuperResIDWE3K3(16,16,1,16,1)", "E in"),
    ("SuperConvK3BNRELU(3,16,2,1)SuperResIDWE2K9(16,16,1,16,1)", "K in"),
    ("SuperConvK3BNRELU(3,16,2,1)SuperResIDWE2K3(24,16,1,16,1)", "previous block's out"),
    ("SuperConvK3BNRELU(1,16,2,1)", "image channels"),
    ("SuperConvK3BNRELU(3,16,2,1)ResBlock(16,16,1)", "cannot read a block"),
    ("SuperConvK3BNRELU(3,a,2,1)", "integers"),
])
def test_bad_strings(bad, why):
    with pytest.raises(ValueError, match=why) as info:
        MobileNetSpace().canonical(bad)
    assert "expected" in str(info.value)
    with pytest.raises(ValueError):
        MobileNetSpace().build(bad)


def test_forward_backward_train_mode_and_eps():
    space = MobileNetSpace(resolution=32, num_classes=10, no_reslink=True, bn_eps=1e-3)
    model = space.build(ZICO_450M)
    assert model.training
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    nn.functional.cross_entropy(logits, torch.randint(0, 10, (4,))).backward()
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in weights)
