"""The cached per-model plan never serves a stale layer list, BatchNorm statistics are left
alone, and the statistics survive hooks running on several threads at once."""
import threading

import pytest
import torch
from torch import nn

import zico_fast
from test_scorer import Net, assert_same, make_batches, oracle_score, snapshot
from testing import kernel_ratio_sums, random_gradients
from zico_fast.stats import GradientStatistics


def test_replaced_frozen_and_unfrozen_layers_are_seen():
    model, batches = Net(), make_batches(3)
    assert "head" in zico_fast.zico_score(model, batches).layer_terms
    model.head = nn.Linear(24, 10)  # a new module: the cached plan must go
    assert zico_fast.zico_score(model, batches).score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
    model.head.weight.requires_grad_(False)
    assert "frozen" in zico_fast.zico_score(model, batches).skipped["head"]
    model.head.weight.requires_grad_(True)
    result = zico_fast.zico_score(model, batches)
    assert "head" in result.layer_terms and result.score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)
    model.hidden.weight = nn.Parameter(torch.randn(24, 24))  # untied from hidden_again now
    assert "hidden_again" in zico_fast.zico_score(model, batches).layer_terms


@pytest.mark.parametrize("restore", [True, False])
def test_batchnorm_statistics_and_flags_untouched(restore):
    model = Net()
    model.bn.momentum = None
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    zico_fast.zico_score(model, make_batches(3), restore=restore)
    assert all(torch.equal(before[k], v) for k, v in model.bn.state_dict().items())
    assert model.bn.track_running_stats is True
    model.bn.track_running_stats = False  # a flag flip after caching is seen too
    zico_fast.zico_score(model, make_batches(2), restore=restore)
    assert model.bn.track_running_stats is False


def test_eval_submodules_and_user_grads_restored_on_cached_plan():
    model = Net()
    for _ in range(2):
        model.eval()
        model.head.train()
        model.stem.weight.grad = torch.ones_like(model.stem.weight)
        before = snapshot(model)
        zico_fast.zico_score(model, make_batches(2))
        assert_same(before, snapshot(model))


def test_model_with_custom_train_is_put_in_train_mode_its_way():
    class Custom(Net):
        calls = 0

        def train(self, mode=True):
            Custom.calls += 1
            return super().train(mode)

    model = Custom().eval()
    zico_fast.zico_score(model, make_batches(2))
    assert Custom.calls >= 1 and not model.training


def test_hooks_path_for_large_models_matches_fast_path():
    model, batches = Net(), make_batches(4)
    fast = zico_fast.zico_score(model, batches)
    in_hooks = zico_fast.zico_score(model, batches, bucket_mb=1e-3)  # weights exceed one bucket: hooks
    assert in_hooks.score == pytest.approx(fast.score, rel=1e-12) and in_hooks.layer_terms.keys() == fast.layer_terms.keys()


def test_concurrent_adds_lose_no_gradient():
    """Autograd runs one hook thread per device: every gradient must reach the kernels."""
    shapes = [(64, 8)] * 16
    per_batch = random_gradients(shapes, 4, seed=2)
    stats = GradientStatistics(len(shapes), bucket_bytes=64 * 8 * 4 * 2)  # flush every second add
    for grads in per_batch:
        threads = [threading.Thread(target=lambda part: [stats.add(i, grads[i]) for i in part], args=(range(t, 16, 4),))
                   for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats.end_batch()
    assert stats.count == [4] * 16
    assert stats.ratio_sums(list(range(16))).tolist() == pytest.approx(kernel_ratio_sums(per_batch), rel=1e-12)
