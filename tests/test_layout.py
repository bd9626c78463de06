"""The memory layout of the passes: the CPU conv defect's guard against reality (each case in its own
process, since the defect kills the process), the scorer converting only where it must, and the
engine's layout choice."""
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import zico_fast
from test_scorer import make_batches, oracle_score
from zico_fast.layout import choose_layout, hits_cpu_conv_defect, layout_of, nchw_strides, with_layout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import conv_layout_probe as probe  # noqa: E402


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text() if platform.machine() == "x86_64" else ""
    except OSError:
        return ""


needs_avx2 = pytest.mark.skipif(" avx2" not in _cpu_flags(), reason="oneDNN's AVX2 kernels need an x86-64 CPU with AVX2")
needs_avx512 = pytest.mark.skipif(" avx512f" not in _cpu_flags(), reason="needs an x86-64 CPU with AVX-512")

# (cin, cout, stride, groups, padding, dtype, layout, size): the failing shape in each layout, then
# its neighbours one change away, which take other kernels.
FAILING = [(4, 16, 2, 1, 0, "float32", fmt, 128) for fmt in ("x", "w", "xw")] + [(7, 16, 2, 1, 0, "float32", "xw", 64)]
SAFE = [(16, 16, 2, 1, 0, "float32", "xw", 128), (4, 16, 1, 1, 0, "float32", "xw", 128),
        (16, 16, 2, 2, 0, "float32", "xw", 128), (4, 16, 2, 1, 0, "float32", "-", 128)]


def _conv(case) -> nn.Conv2d:
    cin, cout, stride, groups, padding = case[:5]
    return nn.Conv2d(cin, cout, 1, stride, padding, groups=groups)


@needs_avx2
@pytest.mark.parametrize("case", FAILING, ids=str)
def test_the_guard_names_shapes_that_fail_on_avx2_kernels(case):
    assert hits_cpu_conv_defect(_conv(case))
    verdict = probe.run_case(*case, isa="AVX2")
    assert verdict.startswith("crash") or verdict == "wrong", verdict


@needs_avx512
@pytest.mark.parametrize("cin", [8, 15])
def test_the_guard_names_shapes_that_fail_on_avx512_kernels(cin):
    """AVX-512 registers hold 16 floats: 8 to 15 input channels fail there, not with AVX2."""
    case = (cin, 16, 2, 1, 0, "float32", "xw", 128)
    assert hits_cpu_conv_defect(_conv(case))
    verdict = probe.run_case(*case)
    assert verdict.startswith("crash") or verdict == "wrong", verdict


@needs_avx2
@pytest.mark.parametrize("isa", ["AVX2", None], ids=["avx2", "native"])
@pytest.mark.parametrize("case", SAFE, ids=str)
def test_shapes_the_guard_lets_through_run_clean(case, isa):
    assert not hits_cpu_conv_defect(_conv(case)) or case[6] == "-"
    assert probe.run_case(*case, isa=isa) == "ok"


class Hazard(nn.Module):
    """A strided 1x1 conv on 4 channels (the defect's shape) between ordinary layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 16, 1, stride=2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.down(torch.relu(self.stem(x))).mean((2, 3)))


SCORE_HAZARD = textwrap.dedent("""
    import copy, sys, torch
    sys.path.insert(0, {tests!r})
    import zico_fast
    from test_layout import Hazard
    torch.manual_seed(0)
    model = Hazard().to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 3, 128, 128, generator=gen).to(memory_format=torch.channels_last),
                torch.randint(0, 10, (4,), generator=gen)) for _ in range(2)]
    before = [(p.detach().clone(), p.stride()) for p in model.parameters()]
    for _ in range(5):
        score = zico_fast.zico_score(model, batches).score
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    same = score == zico_fast.zico_score(nchw, [(x.contiguous(), y) for x, y in batches]).score
    kept = all(torch.equal(p, q) and p.stride() == s for p, (q, s) in zip(model.parameters(), before))
    print(same, kept)
""")


@needs_avx2
def test_the_scorer_runs_a_hazard_model_in_nchw_on_avx2_kernels():
    """The channels_last model and inputs that kill the process in plain passes are scored, in
    NCHW, exactly as an NCHW copy is, and the model keeps its layout."""
    code = SCORE_HAZARD.format(tests=str(ROOT / "tests"))
    plain = probe.run_case(4, 16, 2, 1, 0, "float32", "xw", 128, isa="AVX2")
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MALLOC_CHECK_": "3", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **env})
    assert plain.startswith("crash")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]


def test_a_channels_last_model_without_the_hazard_is_scored_in_its_layout():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 1, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).to(memory_format=torch.channels_last)
    batches = [(x.to(memory_format=torch.channels_last), y) for x, y in make_batches(4)]
    seen = []
    model[2].register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    result = zico_fast.zico_score(model, batches)
    assert seen == [False] * 4
    assert result.score == pytest.approx(oracle_score(model, batches)[0], rel=1e-5)


def test_a_hazard_model_is_scored_in_nchw_and_handed_back_in_its_layout():
    """What the passes see, and the model handed back (small images: safe on these kernels even unconverted)."""
    model = Hazard().to(memory_format=torch.channels_last)
    batches = [(x.to(memory_format=torch.channels_last), y) for x, y in make_batches(4)]
    strides = [p.stride() for p in model.parameters()]
    seen = []
    model.down.register_forward_pre_hook(lambda m, args: seen.append(
        (args[0].stride() == nchw_strides(args[0].shape), m.weight.stride() == nchw_strides(m.weight.shape))))
    result = zico_fast.zico_score(model, batches)
    assert seen == [(True, True)] * 4
    assert [p.stride() for p in model.parameters()] == strides
    nchw = [(x.contiguous(), y) for x, y in batches]
    assert result.score == pytest.approx(oracle_score(model.to(memory_format=torch.contiguous_format), nchw)[0],
                                         rel=1e-5)


def test_engine_layout_choice_and_conversion():
    assert choose_layout("contiguous", "nb201", "cpu") == "contiguous"
    assert choose_layout("channels_last", "mystery", "cpu") == "channels_last"
    assert choose_layout("auto", "mystery", "cpu") == "contiguous"  # not measured: the built layout
    with pytest.raises(ValueError, match="layout must be"):
        choose_layout("nhwc", "nb201", "cpu")
    batches = make_batches(2)
    converted = with_layout(batches, "channels_last")
    assert layout_of(batches) == "contiguous" and layout_of(converted) == "channels_last"
    assert all(torch.equal(x, c) and y is d for (x, y), (c, d) in zip(batches, converted))
    assert layout_of(with_layout(converted, "contiguous")) == "contiguous"
