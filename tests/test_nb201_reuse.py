"""The reused NB201 network of a scoring worker against fresh builds: same bits, same module names,
the same scoring plan and the same ZiCo score, candidate after candidate, whatever the previous
candidate left behind."""
import os
import random

import pytest
import torch

from test_fast_build import assert_same_network
from zico_fast import zico_score
from zico_fast.engine import init_seed, score_candidate
from zico_fast.engine.seeding import CandidateBuilder
from zico_fast.model_state import JOINED_LISTS, ModelPlan, model_plan
from zico_fast.spaces.nb201 import NB201Space
from zico_fast.spaces.nb201_reuse import ReusedNB201, _Part

FIELDS_BY_IDENTITY = ("submodules", "params", "batchnorms", "other_buffers", "conv_weights")


def assert_same_plan(installed: ModelPlan, built: ModelPlan):
    assert [(layer.name, id(layer.weight)) for layer in installed.layers] == \
        [(layer.name, id(layer.weight)) for layer in built.layers]
    assert installed.skipped == built.skipped and installed.custom_train == built.custom_train
    for field in FIELDS_BY_IDENTITY:
        assert [id(x) for x in getattr(installed, field)] == [id(x) for x in getattr(built, field)], field
    assert [(id(m), id(w), t) for m, w, t in installed.weight_checks] == \
        [(id(m), id(w), t) for m, w, t in built.weight_checks]
    assert [(id(m), f) for m, f in installed.batchnorm_flags] == [(id(m), f) for m, f in built.batchnorm_flags]
    assert [(n, id(m)) for n, m in installed.strided_1x1] == [(n, id(m)) for n, m in built.strided_1x1]


@pytest.mark.filterwarnings("ignore::zico_fast.scorer.ZeroSpreadWarning")  # the all-'none' cell: input-free output
@pytest.mark.parametrize("space,size", [(NB201Space(C=8, N=2), 16), (NB201Space(), 32)])
def test_reused_network_is_the_fresh_build(space, size):
    seed = int.from_bytes(os.urandom(4), "little")
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    batches = [(torch.randn(3, 3, size, size, generator=gen), torch.randint(0, 10, (3,), generator=gen))
               for _ in range(2)]
    reused = ReusedNB201(space, "cpu")
    if space.N == 2:  # the small space also checks networks made of modules built ahead of use
        reused.warm_up()
        assert all(entry is not None for row in reused._table.values() for entry in row)
    archs = [space.random(rng) for _ in range(6 if space.N == 2 else 3)]
    archs += [archs[0], "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", archs[1]]  # repeats, an empty cell
    for arch in archs:
        s = rng.getrandbits(63)
        net, fresh = reused.build(arch, s), space.build(arch, seed=s)
        assert_same_network(net, fresh)
        assert [n for n, _ in net.named_modules()] == [n for n, _ in fresh.named_modules()], (seed, arch)
        assert_same_plan(model_plan(net), ModelPlan.build(net, None))
        # restore=False, as the engine scores: the next candidate starts from what this one left
        ours, theirs = zico_score(net, batches, restore=False), zico_score(fresh, batches, restore=False)
        assert ours.score == theirs.score and ours.layer_terms == theirs.layer_terms, (seed, arch)


def test_worker_builder_scores_as_fresh_builds_and_recovers_from_failures():
    space, seed = NB201Space(C=8, N=1, resolution=16), 5
    gen = torch.Generator().manual_seed(0)
    good = [(torch.randn(4, 3, 16, 16, generator=gen), torch.randint(0, 10, (4,), generator=gen)) for _ in range(2)]
    bad = [(x, torch.full_like(y, 99)) for x, y in good]  # a label out of range: cross-entropy raises
    builder = CandidateBuilder(space, seed, "cpu")
    archs = [space.arch_from_index(i) for i in (5, 9000, 15000, 77)]
    for i, arch in enumerate(archs):
        if i == 2:
            failed = score_candidate(space, arch, bad, seed, "cpu", builder=builder)
            assert failed["score"] is None and "IndexError" in failed["error"]
        ours = score_candidate(space, arch, good, seed, "cpu", builder=builder)
        theirs = score_candidate(space, arch, good, seed, "cpu")
        assert ours["score"] == theirs["score"] is not None and ours["init_seed"] == init_seed(seed, arch)
    assert builder.reuse and builder._reused is not None


def test_subclasses_that_change_build_and_other_proxies_are_not_reused():
    class Widened(NB201Space):
        def build(self, arch, device=None, seed=None):
            return super().build(arch, device, seed)

    assert Widened(C=4, N=1).reusing_builder("cpu") is None
    builder = CandidateBuilder(Widened(C=4, N=1), 0, "cpu")
    first = builder.build(NB201Space().arch_from_index(3))
    assert not builder.reuse and builder.build(NB201Space().arch_from_index(3)) is not first
    from zico_fast.engine.pool import WorkerConfig, worker_state

    config = WorkerConfig(NB201Space(C=4, N=1), [], "cpu", 1, 0, proxies=("zico", "synflow"))
    assert not worker_state(config).builder.reuse  # other proxies may leave a network changed
    assert worker_state(WorkerConfig(NB201Space(C=4, N=1), [], "cpu", 1, 0)).builder.reuse


def test_a_part_counts_the_columns_a_join_must_not_skip():
    """A candidate joins only the leading columns some part fills; a part with a buffer to restore
    (a column NB201 leaves empty) must count it, or its plan would lose the buffer."""
    class OwnNorm(torch.nn.BatchNorm2d):  # not torch's forward: its statistics are copied and restored
        def forward(self, x):
            return super().forward(x)

    norm = OwnNorm(3)
    column = 2 + JOINED_LISTS.index("other_buffers")  # after the draws' tensors and bounds
    part = _Part([("norm", norm)])
    assert list(part.columns[column]) == list(norm.buffers()) and part.used == column + 1
    assert _Part([("relu", torch.nn.ReLU())]).used == 2 + JOINED_LISTS.index("submodules") + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reused_network_on_cuda_has_the_cpu_bits():
    """The reused network on the GPU: native draws staged through pinned memory into its tensors."""
    space, rng = NB201Space(), random.Random(3)
    reused = ReusedNB201(space, "cuda")
    for _ in range(4):
        arch, s = space.random(rng), rng.getrandbits(63)
        ours, fresh = reused.build(arch, s).state_dict(), space.build(arch, seed=s).state_dict()
        assert list(ours) == list(fresh) and all(t.is_cuda for t in ours.values())
        assert all(torch.equal(ours[k].cpu(), fresh[k]) for k in fresh)  # tensors copied, the network stays put
