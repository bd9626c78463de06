"""The fast builders (prototype clones + one init pass) against the plain nn.Module constructors."""
import copy

import pytest
import torch
from torch import nn

from zico_fast.spaces.fast_build import clone, materialize
from zico_fast.spaces.mobilenet import ZICO_450M, MobileNetSpace
from zico_fast.spaces.nb201 import NB201Space, _parse
from zico_fast.spaces.nb201_net import NB201Network

NB201_ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|",
]
SMALL_MOBILENET = "SuperConvK3BNRELU(3,8,2,1)SuperResIDWE2K5(8,16,2,8,2)SuperConvK1BNRELU(16,32,1,1)"


def assert_same_network(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device and torch.equal(sa[k], sb[k]), k
    assert str(a) == str(b) and a.training and b.training
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]


@pytest.mark.parametrize("arch", NB201_ARCHS)
def test_nb201_build_is_bit_identical_to_constructors(arch):
    space = NB201Space(num_classes=7, C=8, N=2)
    torch.manual_seed(11)
    old = NB201Network(_parse(arch), 8, 2, 7).train()
    after_old = torch.get_rng_state()
    torch.manual_seed(11)
    new = space.build(arch)
    assert_same_network(old, new)
    assert torch.equal(torch.get_rng_state(), after_old)  # the same draws, no more, no fewer
    torch.manual_seed(11)
    assert_same_network(new, space.build(arch, device="cpu"))


@pytest.mark.parametrize("arch", [ZICO_450M, SMALL_MOBILENET])
def test_mobilenet_build_is_bit_identical_to_constructors(arch):
    space = MobileNetSpace(num_classes=10)
    torch.manual_seed(5)
    new = space.build(arch)
    after_new = torch.get_rng_state()
    torch.manual_seed(5)
    assert_same_network(space._network(arch), new)  # the old way: each constructor allocates and initialises
    assert torch.equal(torch.get_rng_state(), after_new)


def test_built_networks_share_nothing_and_train():
    space = NB201Space(C=8, N=1)
    arch = NB201_ARCHS[0]
    a, b = space.build(arch), space.build(arch)
    pointers = [t.data_ptr() for net in (a, b) for t in list(net.parameters()) + list(net.buffers())]
    assert len(set(pointers)) == len(pointers)  # every tensor its own storage, across models too
    # Hooks, submodules and attributes registered on one model never show up on the other (or the prototype).
    calls = []
    a.cells[0].edges[0].register_forward_hook(lambda *args: calls.append(1))
    a.cells[0].edges[0].extra = nn.ReLU()
    x = torch.randn(2, 3, 32, 32)
    b(x)
    assert calls == [] and not hasattr(b.cells[0].edges[0], "extra")
    a(x)
    assert calls == [1]
    assert "extra" not in dict(space.build(arch).cells[0].edges[0].named_children())
    del a.cells[0].edges[0].extra
    # A training step changes only the model it runs on; copies and state dicts behave as usual.
    before = copy.deepcopy(b.state_dict())
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    a(x).square().mean().backward()
    opt.step()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in before.items())
    assert a.stem[1].num_batches_tracked.item() == 2 and b.stem[1].num_batches_tracked.item() == 1
    b.load_state_dict(a.state_dict())
    assert_same_network(a, b)
    assert_same_network(copy.deepcopy(a), a)


def test_clone_and_materialize_generic_module():
    with torch.device("meta"):
        proto = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Linear(4, 2))
    torch.manual_seed(2)
    with torch.no_grad():
        expected = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Linear(4, 2))
    torch.manual_seed(2)
    assert_same_network(materialize(clone(proto)), expected)
    assert all(p.is_meta for p in proto.parameters())  # the prototype keeps its placeholders
    with pytest.raises(TypeError, match="does not know how PyTorch initialises LayerNorm"):
        materialize(nn.Sequential(nn.LayerNorm(3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_build_on_cuda_has_the_cpu_bits():
    arch = NB201_ARCHS[0]
    torch.manual_seed(3)
    cpu = NB201Space().build(arch)
    torch.manual_seed(3)
    gpu = NB201Space().build(arch, device="cuda")
    assert all(t.is_cuda for t in list(gpu.parameters()) + list(gpu.buffers()))
    assert_same_network(cpu, gpu.cpu())
    space = MobileNetSpace(num_classes=10)
    torch.manual_seed(3)
    cpu = space.build(SMALL_MOBILENET)
    torch.manual_seed(3)
    assert_same_network(cpu, space.build(SMALL_MOBILENET, device="cuda").cpu())


def test_staged_path_draws_the_same_numbers():
    """The non-CPU path (one staging buffer, one copy, foreach splits), run with the CPU as target."""
    from zico_fast.spaces import fast_build

    space = NB201Space(C=8, N=1)
    torch.manual_seed(4)
    expected = space.build(NB201_ARCHS[2])
    net = space.build(NB201_ARCHS[2])
    plan = list(fast_build.init_entries(net.modules()))
    floats = [p for p in plan if p[2].dtype == torch.float32]
    others = [p for p in plan if p[2].dtype != torch.float32]
    torch.manual_seed(4)
    tensors = fast_build._staged(floats, others, torch.device("cpu"))
    assert len(tensors) == len(plan) == len(expected.state_dict())
    for (module, name, *_), t in zip(floats + others, tensors):
        original = dict(expected.named_modules())[next(n for n, m in net.named_modules() if m is module)]
        assert torch.equal(getattr(original, name), t) and getattr(original, name).dtype == t.dtype


def test_default_device_context_does_not_move_the_draws():
    """`with torch.device(d): space.build(arch)` builds on d from the same CPU draws (here d = meta:
    the tensors land there, and the CPU generator advances exactly as for a CPU build)."""
    space = NB201Space(C=8, N=1)
    torch.manual_seed(6)
    space.build(NB201_ARCHS[0])
    after_cpu = torch.get_rng_state()
    torch.manual_seed(6)
    with torch.device("meta"):
        net = space.build(NB201_ARCHS[0])
    assert all(t.is_meta for t in list(net.parameters()) + list(net.buffers()))
    assert torch.equal(torch.get_rng_state(), after_cpu)


def test_native_draws_are_uniform_s_bits():
    """init_weights_ against Tensor.uniform_ after torch.manual_seed, on fresh random lists: sizes
    around the generator's 624-word blocks, seeds above 2**32 (torch keeps the low 32 bits), bounds
    on both conversion paths (csrc/init_weights.cpp), float and int64 constants, and the global
    generator left as it was."""
    from zico_fast._ops import init_weights_

    rng = torch.Generator().manual_seed(1234)
    for _ in range(25):
        seed = int(torch.randint(0, 2**62, (), generator=rng)) * 2 + 1
        sizes = [int(s) for s in torch.randint(1, 3000, (int(torch.randint(1, 7, (), generator=rng)),), generator=rng)]
        sizes[0] = [623, 624, 625, 1, 36864][_ % 5]
        bounds = (torch.rand(len(sizes), generator=rng, dtype=torch.float64) * 2 + 1e-4).tolist()
        # the conversion's literal path (0; 3e-33, whose scaled range is subnormal and would round; 1e30), powers of two
        bounds[-1] = [0.0, 3e-33, 1.0, 0.5, 1e30][_ % 5] if _ % 2 else bounds[-1]
        torch.manual_seed(seed)
        expected = [torch.empty(n).uniform_(-b, b) for n, b in zip(sizes, bounds)]
        state = torch.get_rng_state()
        out = [torch.full((n,), float("nan")) for n in sizes]
        constants = [torch.empty(3), torch.empty(2, 2), torch.empty((), dtype=torch.long)]
        init_weights_(out, bounds, constants, [1.0, 0.0, 0.0], seed)
        for a, b, bound in zip(out, expected, bounds):
            if bound == 0:  # all zeros; their sign is torch's choice (2.13 draws -0.0, 2.11 +0.0)
                assert torch.equal(a, b)
            else:  # bitwise: torch.equal would take -0.0 for +0.0
                assert torch.equal(a.view(torch.int32), b.view(torch.int32))
        assert torch.equal(torch.get_rng_state(), state)
        assert constants[0].eq(1).all() and constants[1].eq(0).all() and constants[2].item() == 0
    with pytest.raises(RuntimeError, match="must be contiguous"):
        init_weights_([torch.empty(4, 4).t()], [1.0], [], [], 0)
    with pytest.raises(RuntimeError, match="must be float32"):
        init_weights_([torch.empty(4, dtype=torch.float64)], [1.0], [], [], 0)


@pytest.mark.parametrize("space,arch", [(NB201Space(C=8, N=2), a) for a in NB201_ARCHS] +
                         [(MobileNetSpace(num_classes=10), SMALL_MOBILENET)])
def test_seeded_build_is_the_manual_seed_build(space, arch):
    """build(arch, seed=s): the bits of torch.manual_seed(s); build(arch), drawn natively, no global draw."""
    seed = 2**40 + 77
    before = torch.get_rng_state()
    seeded = space.build(arch, seed=seed)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(seed)
    assert_same_network(seeded, space.build(arch))
    for bad in (-1, 2**63, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            space.build(arch, seed=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seeded_build_on_cuda_has_the_cpu_bits():
    """The native draws' device path (pinned staging, one copy, fused splits and constant fills)."""
    for space, arch in [(NB201Space(), NB201_ARCHS[0]), (MobileNetSpace(num_classes=10), SMALL_MOBILENET)]:
        gpu = space.build(arch, device="cuda", seed=99)
        assert all(t.is_cuda for t in list(gpu.parameters()) + list(gpu.buffers()))
        assert_same_network(space.build(arch, seed=99), gpu.cpu())
