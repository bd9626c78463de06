"""The proxies' numerics: expressivity on ill-conditioned features against a float64 SVD oracle,
progressivity's NaN rule, GSNR's exact variance, and the channel products the taps use.
(The never-raise contract: tests/test_proxies_shapes.py.)"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.proxies import compute
from zico_fast.proxies.az_nas import as_positions, channel_products, covariance_statistic, eigen_entropies
from zico_fast.proxies.gradient_taps import ShiftedMoments

SCALES = 10 ** torch.linspace(-4, 4, 6)  # channel scales 1e-4 .. 1e4


def ill_conditioned(base: torch.Tensor) -> torch.Tensor:
    """12 channels of rank 6 (copies and sums of the first 6), scales 1e-4..1e4, offset 100."""
    base = base * SCALES[None, :, None, None]
    return torch.cat([base, base[:, 3:], base[:, :3] + base[:, 3:]], 1) + 100


def oracle_entropy(feature: torch.Tensor) -> float:
    """float64 singular values of the centred positions (eigenvalues >= 0 by construction)."""
    x = as_positions(feature.detach()).double().numpy()
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2 / x.shape[0]
    p = s / s.sum()
    return float(-(p * np.log(p + 1e-8)).sum())


def float32_path(feature: torch.Tensor) -> tuple[float, float]:
    """(entropy, smallest eigenvalue) as the float32 covariance computed them before."""
    x = as_positions(feature.detach().float())
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.eigvalsh(((x.T @ x) / x.shape[0]).double())
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum()), float(s.min())


@pytest.mark.parametrize("seed", range(5))
def test_eigen_entropy_of_ill_conditioned_features_matches_float64(seed):
    gen = torch.Generator().manual_seed(seed)
    feature = ill_conditioned(torch.randn(16, 6, 8, 8, generator=gen)).float()
    old_entropy, old_min = float32_path(feature)
    assert old_min < 0  # the input really breaks the float32 path (seeds 0 and 4: entropy NaN)
    (entropy,), _ = eigen_entropies([covariance_statistic(feature)[0]])
    assert float(entropy) == pytest.approx(oracle_entropy(feature), rel=1e-10)


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (4, 5, 1, 1), (4, 3, 7), (6, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_products_equal_the_positions_product(shape, channels_last):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen, dtype=torch.float64)
    b = torch.cat([b, b[:, :2]], 1)  # other channel count
    if channels_last and len(shape) == 4:
        a, b = a.to(memory_format=torch.channels_last), b.to(memory_format=torch.channels_last)
    torch.testing.assert_close(channel_products(a, b), as_positions(a).T @ as_positions(b), rtol=1e-13, atol=1e-13)


def test_covariance_leaves_a_float64_feature_as_it_was():
    feature = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    before = feature.clone()
    covariance_statistic(feature)
    assert torch.equal(feature, before)


class Spread(nn.Module):
    def forward(self, x):
        return ill_conditioned(x)


class Trunk(nn.Module):
    """A stem, blocks (the longest nn.Sequential), a linear head."""

    def __init__(self, *blocks, width=6):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(self._width(), 10)

    def _width(self):
        with torch.no_grad():
            return self.blocks(self.stem(torch.zeros(1, 3, 8, 8))).flatten(2).shape[1]

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).flatten(2).mean(2))


def data(n=2, size=8, batch=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(n)]


def test_expressivity_through_compute_on_an_ill_conditioned_network():
    torch.manual_seed(0)
    net = Trunk(Spread(), nn.Conv2d(12, 6, 1), Spread())
    batches = data()
    feats = [net.stem(batches[0][0])]
    for block in net.blocks:
        feats.append(block(feats[-1]))
    assert any(math.isnan(float32_path(f)[0]) for f in feats)  # the old path: NaN, logged as -inf
    values = compute(net, batches, ("expressivity", "progressivity"))
    entropies = [oracle_entropy(f) for f in feats]
    assert values["expressivity"] == pytest.approx(sum(entropies), rel=1e-9)
    assert values["progressivity"] == pytest.approx(min(np.diff(entropies)), rel=1e-6, abs=1e-9)


class Constant(nn.Module):
    """A block whose output is the same for every sample: its entropy is 0/0."""

    def forward(self, x):
        return torch.zeros_like(x)


class Residual(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.filterwarnings("ignore::zico_fast.ZeroSpreadWarning")  # position 2: the head sees zeros
@pytest.mark.parametrize("position", [0, 1, 2])
def test_progressivity_is_nan_wherever_the_undefined_entropy_sits(position):
    """AZ-NAS's np.min gives NaN for any NaN step; Python's min would give NaN only when the NaN
    comes first. The rule here: any undefined entropy makes both AZ-NAS entropy proxies NaN."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()) for _ in range(2)]
    blocks.insert(position, Constant())
    net = Trunk(*blocks)
    details = {}
    values = compute(net, data(), ("expressivity", "progressivity"), nonfinite="nan", details=details)
    assert math.isnan(values["progressivity"]) and math.isnan(values["expressivity"])
    assert details["reasons"]["progressivity"] == f"the output of block {position} is constant " \
                                                  "(zero variance: its entropy is 0/0)"


def test_gsnr_variance_is_exact_at_two_batches():
    gen = torch.Generator().manual_seed(0)
    g1 = torch.randn(1000, generator=gen)
    g2 = torch.where(torch.rand(1000, generator=gen) < 0.3, g1, torch.randn(1000, generator=gen))
    for a, b in ((g1, g2), (g1.double(), g1.double() * (1 + 1e-15 * torch.rand(1000, generator=gen, dtype=torch.float64)))):
        moments = ShiftedMoments(a)
        moments.add(b)
        mean, var = moments.mean_and_variance()
        want = ((a.double() - b.double()) / 2) ** 2
        if a.dtype == torch.float64:
            assert not torch.equal(old_variance([a, b]), want)  # before: not exact for float64 gradients
        assert torch.equal(var, want)  # bit for bit, in float32 and float64 gradients alike
        assert torch.equal(var == 0, a == b)  # equal gradients: 0 exactly, never a rounding residue
        assert torch.allclose(mean, (a.double() + b.double()) / 2, rtol=1e-15, atol=0)


def old_variance(grads):
    """sq/n - mean^2, as GSNR computed it before."""
    total, squares = sum(grads), sum(g * g for g in grads)
    return squares / len(grads) - (total / len(grads)) ** 2


def test_gsnr_variance_of_equal_gradients_is_zero_at_any_count():
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (old_variance([g, g, g]) > 0).any()  # before: a residue that passed var > 0 (ratios ~1e16)
    moments = ShiftedMoments(g)
    for _ in range(2):
        moments.add(g.clone())
    mean, var = moments.mean_and_variance()
    assert torch.equal(var, torch.zeros_like(var)) and torch.equal(mean, g)


def test_gsnr_matches_a_float64_oracle_with_exactly_equal_gradient_elements():
    """A weight whose input channel is the same in both batches gets the same gradient there."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x1 = torch.randn(4, 6)
    batches = [(x1, torch.tensor([0, 1, 2, 0])), (x1.clone(), torch.tensor([0, 1, 2, 1]))]
    value = compute(net, batches, ("gsnr",))["gsnr"]
    grads = []
    for x, y in batches:
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append([net[1].weight.grad.double().clone(), net[3].weight.grad.double().clone()])
    want = 0.0
    for g1, g2 in zip(*grads):
        var, mean = ((g1 - g2) / 2) ** 2, (g1 + g2) / 2
        keep = var > 0
        assert (~keep).any()  # some elements' gradients are equal in both batches
        want += math.log(float((mean[keep] ** 2 / var[keep]).sum()))
    assert value == pytest.approx(want, rel=1e-12)
