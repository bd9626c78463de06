"""ZiCo inside a real training loop: training is unchanged bit for bit, and the statistics are
those of each backward's own gradient (also when .grad accumulates); torch.compile'd models."""
import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import zico_fast
from test_scorer import Net, make_batches, oracle_score
from zico_fast.reference import zico_oracle


def train(model, batches, optimizer_type, with_zico):
    """k optimizer steps; returns the per-step gradients of the scored weights and the ZiCo."""
    optimizer = optimizer_type(model.parameters(), lr=0.05)
    selected = zico_fast.select_layers(model)[0]
    per_step = []
    zico = zico_fast.ZiCo(model) if with_zico else None
    with zico if zico is not None else contextlib.nullcontext():
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            per_step.append({layer.name: layer.weight.grad.clone() for layer in selected if layer.weight.grad is not None})
            optimizer.step()
    return per_step, zico


@pytest.mark.parametrize("optimizer_type", [torch.optim.SGD, torch.optim.Adam])
def test_training_with_zico_is_bitwise_unchanged(optimizer_type):
    torch.manual_seed(0)
    plain, watched = Net(), None
    watched = copy.deepcopy(plain)
    batches = make_batches(4, seed=3)
    plain_grads, _ = train(plain, batches, optimizer_type, with_zico=False)
    watched_grads, zico = train(watched, batches, optimizer_type, with_zico=True)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), name  # weights and BN statistics after 4 steps
    assert all(not p._backward_hooks and not getattr(p, "_post_accumulate_grad_hooks", None) for p in watched.parameters())
    # the statistics are those of the gradients the optimizer saw at each step
    names = [n for n in plain_grads[0] if all(n in step for step in plain_grads)]
    stacks = {n: torch.stack([step[n] for step in plain_grads]).reshape(len(batches), -1).numpy() for n in names}
    want_score, want_terms = zico_oracle(stacks)
    result = zico.result()
    assert result.layer_terms.keys() == want_terms.keys()
    assert result.score == pytest.approx(want_score, rel=1e-5)
    assert all(torch.equal(plain_grads[-1][n], watched_grads[-1][n]) for n in names)


def test_accumulating_grads_records_each_backward():
    model = Net()
    batches = make_batches(3, seed=5)
    with zico_fast.ZiCo(model) as zico:
        for x, y in batches:  # no zero_grad: .grad accumulates, as in gradient accumulation
            F.cross_entropy(model(x), y).backward()
    accumulated = model.head.weight.grad.clone()
    assert zico.result().score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
    model.zero_grad()
    expected = sum(torch.autograd.grad(F.cross_entropy(model(x), y), model.head.weight)[0] for x, y in batches)
    torch.testing.assert_close(accumulated, expected, rtol=1e-6, atol=1e-7)


def test_entering_the_same_zico_again_adds_to_its_statistics():
    model = Net()
    batches = make_batches(4, seed=6)
    zico = zico_fast.ZiCo(model)
    for part in (batches[:1], batches[1:]):  # e.g. one epoch's first step, then the rest
        with zico:
            for x, y in part:
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
    assert zico.result().num_batches == 4
    assert zico.result().score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


def test_loss_scaling_a_power_of_two_keeps_the_score_and_an_overflow_never_stops_training():
    model, batches = Net(), make_batches(3, seed=7)

    def record(scales, nonfinite="raise"):
        with zico_fast.ZiCo(model, nonfinite=nonfinite) as zico:
            for (x, y), scale in zip(batches, scales):
                model.zero_grad()
                (F.cross_entropy(model(x), y) * scale).backward()  # as a GradScaler scales the loss
        return zico

    assert record([2.0**16] * 3).result().score == record([1.0] * 3).result().score
    overflowed = record([1.0, float("inf"), 1.0])  # every backward returned: training went on
    with pytest.raises(zico_fast.NonFiniteGradientError, match="in batch 1"):
        overflowed.result()
    assert math.isnan(record([1.0, float("inf"), 1.0], nonfinite="nan").result().score)


def test_release_grads_frees_scored_grads():
    model = Net()
    batches = make_batches(3)
    with zico_fast.ZiCo(model, release_grads=True) as zico:
        for x, y in batches:
            F.cross_entropy(model(x), y).backward()
            assert model.head.weight.grad is None and model.stem.weight.grad is None
            model.zero_grad()
    assert zico.result().score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


def small_net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 3 * 2, 10))


@pytest.mark.slow
def test_torch_compile_model_scores_as_eager():
    model = small_net()
    batches = make_batches(3, seed=7)
    eager = zico_fast.zico_score(model, batches)
    compiled = torch.compile(model, backend="aot_eager")
    result = zico_fast.zico_score(compiled, batches)
    assert result.score == pytest.approx(eager.score, rel=1e-6)
    assert result.score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
    with zico_fast.ZiCo(compiled) as zico:  # hooks on a compiled model's weights, user loop
        for x, y in batches:
            compiled.zero_grad()
            F.cross_entropy(compiled(x), y).backward()
    assert zico.result().score == pytest.approx(eager.score, rel=1e-6)
