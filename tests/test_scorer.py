"""zico_score / ZiCo on real models against the authors' formula, and the model left untouched."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zico_fast
from testing import DEVICES
from zico_fast.reference import authors_zico_score, gradient_stacks, zico_oracle, zico_score_reference


class Net(nn.Module):
    """Plain, depthwise and grouped convs, BN, Linear, an unused layer and a shared weight."""

    def __init__(self, channels=12, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.depthwise = nn.Conv2d(channels, channels, 5, padding=2, groups=channels, bias=False)
        self.grouped = nn.Conv2d(channels, 2 * channels, 3, padding=1, groups=3)
        self.unused = nn.Conv2d(channels, channels, 1)
        self.hidden = nn.Linear(2 * channels, 2 * channels)
        self.hidden_again = nn.Linear(2 * channels, 2 * channels)
        self.hidden_again.weight = self.hidden.weight  # shared: counted once
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.grouped(self.depthwise(x)))
        x = x.mean((2, 3))
        return self.head(F.relu(self.hidden_again(F.relu(self.hidden(x)))))


def make_batches(num_batches, size=8, device="cpu", seed=0, classes=10):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 9, 7, generator=gen).to(device), torch.randint(0, classes, (size,), generator=gen).to(device))
            for _ in range(num_batches)]


def oracle_score(model, batches, layers=None):
    return zico_oracle(gradient_stacks(model, batches, layers=layers))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_batches", [2, 3, 8, 64])
def test_score_matches_oracle(device, num_batches):
    torch.manual_seed(num_batches)
    model = Net().to(device)
    batches = make_batches(num_batches, device=device, seed=num_batches)
    result = zico_fast.zico_score(model, batches)
    want_score, want_terms = oracle_score(model, batches)
    assert result.num_batches == num_batches
    assert result.score == pytest.approx(want_score, rel=1e-5)
    assert result.layer_terms.keys() == want_terms.keys()
    for name, term in want_terms.items():
        assert result.layer_terms[name] == pytest.approx(term, rel=1e-5, abs=1e-6)
    assert set(result.skipped) == {"unused", "hidden_again"}
    assert "unused" in result.skipped["unused"] and "shares" in result.skipped["hidden_again"]


def test_reference_and_authors_loop_agree(num_batches=3):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 5, 10))
    batches = make_batches(num_batches)
    fast = zico_fast.zico_score(model, batches).score
    assert zico_score_reference(model, batches) == pytest.approx(fast, rel=1e-6)
    assert authors_zico_score(model, batches) == pytest.approx(fast, rel=1e-5)


def test_frozen_layer_is_skipped():
    model = Net()
    model.grouped.weight.requires_grad_(False)
    result = zico_fast.zico_score(model, make_batches(2))
    assert "frozen" in result.skipped["grouped"] and "grouped" not in result.layer_terms
    assert result.score == pytest.approx(oracle_score(model, make_batches(2))[0], rel=1e-5)


def test_custom_layer_selection():
    model = nn.Sequential(nn.Conv1d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5, 4))
    batches = [(torch.randn(5, 3, 7), torch.randint(0, 4, (5,))) for _ in range(3)]
    by_type = zico_fast.zico_score(model, batches, layers=(nn.Conv1d, nn.Linear))
    assert set(by_type.layer_terms) == {"0", "3"}
    assert by_type.score == pytest.approx(oracle_score(model, batches, (nn.Conv1d, nn.Linear))[0], rel=1e-5)
    only_conv = zico_fast.zico_score(model, batches, layers=lambda name, module: isinstance(module, nn.Conv1d))
    assert set(only_conv.layer_terms) == {"0"}


def test_all_zero_layer_contributes_nothing():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    nn.init.zeros_(model[1].weight)  # then layer 0 gets exactly zero gradients
    batches = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(2)]
    result = zico_fast.zico_score(model, batches)
    assert "zero gradient std" in result.skipped["0"]
    assert result.score == pytest.approx(result.layer_terms["1"]) == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "hooks": [len(getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in model.parameters()],
    }


def assert_same(before, after):
    assert before["modes"] == after["modes"] and before["hooks"] == after["hooks"]
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    for key, grad in before["grads"].items():
        assert (grad is None) == (after["grads"][key] is None) and (grad is None or torch.equal(grad, after["grads"][key])), key


def test_model_is_left_as_found():
    model = Net()
    model.eval()
    model.head.train()
    F.cross_entropy(model(make_batches(1)[0][0]), make_batches(1)[0][1]).backward()  # user's own grads
    before = snapshot(model)
    zico_fast.zico_score(model, make_batches(3))
    assert_same(before, snapshot(model))
    with pytest.raises(ValueError):
        zico_fast.zico_score(model, make_batches(1))  # fails mid-way: still restored
    assert_same(before, snapshot(model))


def test_restore_false_leaves_train_mode_and_no_hooks():
    model = Net().eval()
    zico_fast.zico_score(model, make_batches(2), restore=False)
    assert model.training
    assert all(not (getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in model.parameters())


def test_user_loop_with_context_manager():
    model = Net()
    batches = make_batches(4)
    with zico_fast.ZiCo(model) as zico:
        for x, y in batches:
            F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
    assert zico.result().score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
    kept = zico_fast.ZiCo(model, release_grads=False, num_batches=2).attach()
    for x, y in batches[:2]:
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        assert model.head.weight.grad is not None  # left in place for the caller
    kept.detach()
    assert kept.result().score == pytest.approx(oracle_score(model, batches[:2])[0], rel=1e-5)


def test_compiled_kernel_does_the_work():
    model = Net()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        zico_fast.zico_score(model, make_batches(3))
        zico_fast.zico_score(model, make_batches(2))
    names = {event.name for event in prof.events()}
    assert {"zico_fast::accumulate_", "zico_fast::ratio_sums", "zico_fast::pair_ratio_sums"} <= names


def test_non_finite_gradient_raises_or_gives_nan():
    model = Net()
    batches = make_batches(3)
    batches[1][0][0, 0, 0, 0] = float("nan")
    with pytest.raises(zico_fast.NonFiniteGradientError, match=r"layer 'stem' .* batch 1"):
        zico_fast.zico_score(model, batches)
    result = zico_fast.zico_score(model, batches, nonfinite="nan")
    assert result.score != result.score


def test_bad_input_errors():
    model = Net()
    with pytest.raises(ValueError, match="at least 2 batches"):
        zico_fast.zico_score(model, make_batches(1))
    with pytest.raises(ValueError, match="batches is empty"):
        zico_fast.zico_score(model, [])
    with pytest.raises(ValueError, match="batch 1 is empty"):
        zico_fast.zico_score(model, [make_batches(1)[0], (torch.zeros(0, 3, 9, 7), torch.zeros(0, dtype=torch.long))])
    with pytest.raises(ValueError, match="no layer ZiCo can score"):
        zico_fast.zico_score(nn.Sequential(nn.BatchNorm1d(3)), make_batches(2))
    with pytest.raises(ValueError, match=r"inputs are on meta but the model is on cpu; move the batches"):
        zico_fast.zico_score(model, [(torch.zeros(2, 3, 9, 7, device="meta"), torch.zeros(2, dtype=torch.long))] * 2)
    with pytest.raises(TypeError, match="predicate"):
        zico_fast.zico_score(model, make_batches(2), layers=3)
    with pytest.raises(ValueError, match="nonfinite"):
        zico_fast.ZiCo(model, nonfinite="ignore")


def test_float64_model_is_refused_before_any_pass_and_left_as_found():
    model = Net().double()
    batches = [(x.double(), y) for x, y in make_batches(2)]
    before = copy.deepcopy(model.state_dict())
    for score in (lambda: zico_fast.zico_score(model, batches), lambda: zico_fast.ZiCo(model)):
        with pytest.raises(zico_fast.ZiCoUserError, match=r"has float64 weights.*\.float\(\)"):
            score()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_small_buckets_flush_mid_backward():
    model = Net()
    batches = make_batches(3)
    tiny = zico_fast.zico_score(copy.deepcopy(model), batches, bucket_mb=1e-4).score
    assert tiny == pytest.approx(zico_fast.zico_score(model, batches).score, rel=1e-12)


def test_channels_last_model():
    model = Net().to(memory_format=torch.channels_last)
    batches = make_batches(3)
    assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert zico_fast.zico_score(model, batches).score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model(dtype):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 5, 10)).to(dtype)
    batches = [(x.to(dtype), y) for x, y in make_batches(3)]
    result = zico_fast.zico_score(model, batches)
    assert model[0].weight.dtype == dtype and result.score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
