"""The proxies' never-raise contract: every proxy finite or NaN with a reason on shapes and inputs
the taps used to raise on (odd strides, 1x1, 1-d and 2-d blocks, tuple outputs, no ReLU, NaN
inputs), a tap's own exception kept as its reason, and no host read inside the hooks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_proxies_numerics import Trunk, data
from zico_fast import zico_score
from zico_fast.proxies import compute
from zico_fast.proxies.az_nas import pair_positions
from zico_fast.spaces.base import Cost


def test_pair_positions_folds_any_stride_into_channels():
    g = torch.randn(2, 3, 7, 7)
    assert torch.equal(pair_positions(g[..., :6, :6], torch.zeros(2, 5, 3, 3)), F.pixel_unshuffle(g[..., :6, :6], 2))
    odd = pair_positions(g, torch.zeros(2, 5, 4, 4))  # stride 2 with padding: 7 -> 4
    assert torch.equal(odd, F.pixel_unshuffle(F.pad(g, (0, 1, 0, 1)), 2))  # zero gradient past the edge
    assert torch.equal(pair_positions(g, torch.zeros(2, 5, 1, 1)), g.reshape(2, 3 * 49, 1, 1))  # to 1 x 1
    line = torch.randn(2, 3, 5)
    assert torch.equal(pair_positions(line, torch.zeros(2, 4, 3)),
                       F.pad(line, (0, 1)).reshape(2, 3, 3, 2).transpose(2, 3).reshape(2, 6, 3))
    assert "do not pair" in pair_positions(g, torch.zeros(2, 5))
    assert "no stride maps" in pair_positions(g, torch.zeros(2, 5, 9, 9))  # upsampling


class Pair(nn.Module):
    def forward(self, x):
        return x, x


class Unpair(nn.Module):
    def forward(self, pair):
        return pair[0] * pair[1]


class Line(nn.Module):
    """Blocks on [B, C, L] sequences: Conv1d with stride 2 on odd lengths."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.Sequential(nn.Conv1d(6, 6, 3, 2, 1), nn.ReLU(), nn.Conv1d(6, 6, 3, 2, 1))
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x).flatten(2)).mean(2))


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Flatten(), nn.Linear(3 * 49, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.blocks(x)


class Bare(nn.Module):
    """No nn.ReLU, no nn.Sequential, and a weight used functionally (its module never runs)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return F.linear(F.gelu(self.conv(x)).mean((2, 3)), self.fc.weight, self.fc.bias)


def strided():
    return Trunk(*[nn.Sequential(nn.Conv2d(6, 6, 3, 2, 1), nn.ReLU()) for _ in range(3)])  # 7 -> 4 -> 2 -> 1


SHAPES = {"odd strides down to 1x1": strided, "1-d blocks": Line, "2-d blocks": Flat, "bare": Bare,
          "tuple output": lambda: Trunk(Pair(), Unpair(), nn.Conv2d(6, 6, 3, padding=1))}
EXPECTED_NAN = {"odd strides down to 1x1": set(), "1-d blocks": set(), "2-d blocks": set(),
                "bare": {"naswot", "expressivity", "progressivity", "trainability", "zico_bc"},
                "tuple output": {"naswot", "expressivity", "progressivity", "trainability"}}


@pytest.mark.parametrize("kind", SHAPES)
def test_every_proxy_is_finite_or_nan_with_a_reason_and_never_raises(kind):
    torch.manual_seed(0)
    net, batches = SHAPES[kind](), data(size=7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expected_zico = zico_score(net, batches).score
    details = {}
    values = compute(net, batches, "all", cost=Cost(1, 1, 1), details=details)
    assert values["zico"] == expected_zico
    assert {n for n, v in values.items() if math.isnan(v)} == EXPECTED_NAN[kind] == set(details["reasons"])
    assert all(math.isfinite(v) for n, v in values.items() if n not in EXPECTED_NAN[kind])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    if kind == "bare":
        assert details["reasons"]["zico_bc"] == "layer 'fc' did not run on the first batch, so its output shape is unknown"
        assert details["reasons"]["naswot"].startswith("the model has no nn.ReLU")


def test_an_exception_inside_a_tap_is_the_proxys_reason_not_the_callers(monkeypatch):
    import zico_fast.proxies.activation_taps as taps

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(taps, "cross_moment_statistic", broken)
    torch.manual_seed(0)
    net, batches, details = strided(), data(size=7), {}
    expected_zico = zico_score(net, batches).score
    values = compute(net, batches, ("zico", "trainability", "expressivity", "naswot"), details=details)
    assert values["zico"] == expected_zico and math.isfinite(values["naswot"])  # other taps go on
    reason = "RuntimeError in the block_output hook: boom"
    assert details["reasons"] == {"trainability": reason, "expressivity": reason}  # the failed tap's proxies
    assert math.isnan(values["trainability"]) and math.isnan(values["expressivity"])


def test_hooks_read_no_value_on_the_host(monkeypatch):
    """No float()/.item()/bool()/tolist() inside the hooks (each is a host sync per block on a GPU):
    with those made to raise during the passes, no proxy picks up a reason; values are read after."""
    from zico_fast.proxies.compute import _Taps

    torch.manual_seed(0)
    net, batches = strided(), data(size=7)
    names = ("grad_norm", "snip", "gsnr", "zico_bc", "naswot", "expressivity", "progressivity", "trainability")
    taps = _Taps(net, names, None, None)
    with monkeypatch.context() as patch:
        for method in ("__float__", "__bool__", "__int__", "__index__", "item", "tolist"):
            patch.setattr(torch.Tensor, method, lambda *a: (_ for _ in ()).throw(AssertionError("host read")))
        for x, y in batches:
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
    taps.detach()
    assert taps.reasons(zico_score(strided(), batches)) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_hooks_never_synchronise_and_values_match_the_cpu():
    from zico_fast.proxies.compute import _Taps

    torch.manual_seed(0)
    net, batches = strided().cuda(), [(x.cuda(), y.cuda()) for x, y in data(size=7)]
    names = ("grad_norm", "snip", "gsnr", "zico_bc", "naswot", "expressivity", "progressivity", "trainability")
    taps = _Taps(net, names, None, None)
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the hooks raises (and becomes a reason)
    try:
        for x, y in batches:
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        taps.detach()
    assert taps.reasons(zico_score(strided().cuda(), batches)) == {}
    torch.manual_seed(0)
    on_cpu = compute(strided(), data(size=7), names)
    torch.manual_seed(0)
    on_gpu = compute(strided().cuda(), batches, names)
    for name in ("naswot", "expressivity", "progressivity"):
        assert on_gpu[name] == pytest.approx(on_cpu[name], rel=1e-4, abs=1e-6)
    assert math.isfinite(on_gpu["trainability"])  # other vectors: the device's generator


def test_a_nan_input_gives_nan_proxies_with_reasons_not_an_svd_error():
    """Found by the 1,000-case fuzz: the SVD of a non-finite cross moment raised from values()."""
    torch.manual_seed(0)
    batches = data(size=7)
    batches[0][0][1, 0, 0, 0] = math.nan
    details = {}
    net = Trunk(*[nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()) for _ in range(2)])
    values = compute(net, batches, ("zico", "expressivity", "trainability"), nonfinite="nan", details=details)
    assert all(math.isnan(v) for v in values.values())
    assert details["reasons"]["trainability"] == "block 0's pulled-back gradient holds inf or NaN"
    assert details["reasons"]["expressivity"] == "the input of block 0 holds inf or NaN"
