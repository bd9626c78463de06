"""zico_fast.Scorer, the engine for a user's own loop: the records equal the engine's own evaluation,
in the order asked; repeats and logged candidates are not scored again; a native crash fails its
candidate alone; model factories; and the one-line errors."""
import json

import pytest
import torch

import zico_fast
from engine_spaces import CrashingSpace
from zico_fast import Scorer, ZiCoUserError
from zico_fast.engine import InProcessBackend, RunLogError, Task, WorkerConfig, init_seed, score_candidate
from zico_fast.engine.repro import torch_settings
from zico_fast.engine.salvage import salvage
from zico_fast.model_factories import factory_name
from zico_fast.spaces.nb201 import NB201Space

SPACE = NB201Space(C=4, N=1, resolution=16)


def tiny_net():
    """A model factory at the top level of an importable module: what worker processes can find."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 16 * 16, 10))


def not_a_model():
    return "a string"


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 10, (4,), generator=generator))
            for _ in range(2)]


class CountingBackend(InProcessBackend):
    """The in-process backend, remembering which archs it was asked to score."""

    def __init__(self):
        self.asked = []

    def run(self, tasks):
        self.asked += [t.arch for t in tasks]
        yield from super().run(tasks)


def reference(space, arch, batches, seed=0, proxies=("zico",)):
    with torch_settings(1):
        return score_candidate(space, space.canonical(arch), batches, seed, "cpu", proxies)


def test_records_equal_the_engine_in_the_order_asked_and_repeats_are_scored_once(batches):
    archs = [SPACE.arch_from_index(i) for i in (9, 4000, 9, 321)]
    backend = CountingBackend()
    with Scorer(SPACE, batches, backend=backend, proxies=("zico", "naswot"), seed=3) as scorer:
        records = scorer.score(archs)
        again = scorer.score(archs[1:2])
    assert backend.asked == [archs[0], archs[1], archs[3]]  # the repeat of index 9 is not scored again
    assert [r["arch"] for r in records] == archs
    assert [r["cached"] for r in records] == [False, False, True, False] and again[0]["cached"]
    for arch, record in zip(archs, records):
        want = reference(SPACE, arch, batches, seed=3, proxies=("zico", "naswot"))
        assert record["score"] == want["score"] and record["values"] == want["values"]  # bit for bit
        assert record["init_seed"] == init_seed(3, SPACE.key(arch)) and record["error"] is None
    assert records[0]["id"] == records[2]["id"] and again[0]["score"] == records[1]["score"]


def test_a_killed_loop_resumes_from_its_log_without_rescoring(batches, tmp_path):
    log = tmp_path / "loop.jsonl"
    first = [SPACE.arch_from_index(i) for i in (1, 2, 3)]
    with Scorer(SPACE, batches, backend=CountingBackend(), log=log) as scorer:
        before = scorer.score(first)
    backend = CountingBackend()
    with Scorer(SPACE, batches, backend=backend, log=log) as scorer:  # the restarted loop proposes them again
        after = scorer.score(first + [SPACE.arch_from_index(4)])
    assert backend.asked == [SPACE.arch_from_index(4)]
    assert [r["score"] for r in after[:3]] == [r["score"] for r in before] and all(r["cached"] for r in after[:3])
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["kind"] == "scorer" and [r["id"] for r in lines[1:]] == [0, 1, 2, 3]
    with pytest.raises(RunLogError, match="seed: 0 -> 1"):  # other settings would mix two kinds of score
        Scorer(SPACE, batches, backend=CountingBackend(), log=log, seed=1)


def test_a_salvaged_log_resumes_and_rescores_only_the_lost_record(batches, tmp_path):
    log = tmp_path / "loop.jsonl"
    archs = [SPACE.arch_from_index(i) for i in (1, 2, 3, 4)]
    with Scorer(SPACE, batches, backend=CountingBackend(), log=log) as scorer:
        before = scorer.score(archs)
    lines = log.read_text().splitlines()
    twice = tmp_path / "twice.jsonl"  # a record logged twice: salvage first
    twice.write_text("\n".join(lines + lines[-1:]) + "\n")
    with pytest.raises(RunLogError, match="holds a record id twice; `zico-fast salvage"):
        Scorer(SPACE, batches, backend=CountingBackend(), log=twice)
    lines[2] = lines[2][:len(lines[2]) // 2]  # id 1's record (archs[1]) cut in the middle of the log
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunLogError, match="not a JSON line .*zico-fast salvage"):
        Scorer(SPACE, batches, backend=CountingBackend(), log=log)
    assert salvage(log).kept == 3
    backend = CountingBackend()
    with Scorer(SPACE, batches, backend=backend, log=log) as scorer:
        after = scorer.score(archs + [SPACE.arch_from_index(5)])
    assert backend.asked == [archs[1], SPACE.arch_from_index(5)]  # the lost record and the new arch only
    assert [r["cached"] for r in after] == [True, False, True, True, False]
    assert [r["score"] for r in after[:4]] == [r["score"] for r in before]  # the seed rule: the same bits
    assert [json.loads(line)["id"] for line in log.read_text().splitlines()[1:]] == [0, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_native_crash_is_a_failed_record_and_the_loop_goes_on(batches):
    space = CrashingSpace()
    archs = [space.arch_from_index(i) for i in (1, 3, 2, 6)]  # 3 and 6 crash their process (SIGSEGV)
    with Scorer(space, batches, workers=1) as scorer:
        records = scorer.score(archs)
        later = scorer.score([space.arch_from_index(4)])
    for arch, record in zip(archs, records):
        if space.crashes(arch):
            assert record["score"] is None and "killed by SIGSEGV" in record["error"]
        else:
            assert record["score"] == reference(space, arch, batches)["score"]
    assert later[0]["score"] == reference(space, space.arch_from_index(4), batches)["score"]


@pytest.mark.slow
def test_model_factories_score_in_worker_processes_under_the_seed_rule(batches):
    with Scorer(None, batches, workers=1) as scorer:
        records = scorer.score([tiny_net, "test_scorer_api:tiny_net", not_a_model])
    name = f"{tiny_net.__module__}:tiny_net"
    assert records[0]["arch"] == name and records[0]["init_seed"] == init_seed(0, f"model:{name}")
    assert records[1]["cached"]  # the same factory by name
    with torch_settings(1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(0, f"model:{name}"))  # as `zico-fast score --model` builds it
            model = tiny_net()
        want = zico_fast.zico_score(model, batches, restore=False).score
    assert records[0]["score"] == want
    assert records[2]["score"] is None and "returned a str, not an nn.Module" in records[2]["error"]


def test_factories_on_the_in_process_backend_too(batches):
    backend = CountingBackend()
    with Scorer(None, batches, backend=backend) as scorer:
        record, = scorer.score([tiny_net])
    assert record["score"] is not None and backend.asked == [f"{tiny_net.__module__}:tiny_net"]


def test_bad_input_is_one_clear_error(batches):
    def local_factory():
        return tiny_net()

    with Scorer(None, batches, backend=CountingBackend()) as scorer:
        for bad, message in ((lambda: tiny_net(), "no importable name"), (local_factory, "no importable name"),
                             ("nowhere_module:f", "cannot be found"), (42, "not a int")):
            with pytest.raises(ZiCoUserError, match=message):
                scorer.score([tiny_net, bad])  # every candidate is checked before any is scored
    with Scorer(SPACE, batches, backend=CountingBackend()) as scorer:
        with pytest.raises(ZiCoUserError, match="nb201 space: .*"):
            scorer.score(["|nope~0|+|"])
        with pytest.raises(ZiCoUserError, match="space=None"):
            scorer.score([tiny_net])
    scorer.close()  # closing twice is harmless
    with pytest.raises(ZiCoUserError, match="closed"):
        scorer.score([SPACE.arch_from_index(1)])
    with pytest.raises(ZiCoUserError, match="at least 2 batches"):
        Scorer(SPACE, batches[:1])
    with pytest.raises(ZiCoUserError, match="analytic cost"):
        Scorer(None, batches, proxies=("zico", "params"))
    with pytest.raises(ZiCoUserError, match="not a dict"):
        Scorer({"not": "a space"}, batches)
    with pytest.raises(ZiCoUserError, match="backend must be"):
        Scorer(SPACE, batches, backend="cluster")
    with pytest.raises(ZiCoUserError, match="Ray actors cannot import"):
        factory_name("__main__:make", remote=True)


def test_a_backend_object_is_used_as_given(batches):
    """Any object with the Backend interface plugs in; the task carries the seed rule's init_seed."""
    seen = []

    class Recording(CountingBackend):
        def start(self, config: WorkerConfig):
            seen.append(config.seed)
            super().start(config)

        def run(self, tasks: list[Task]):
            seen.extend(t.init_seed for t in tasks)
            yield from super().run(tasks)

    arch = SPACE.arch_from_index(77)
    with Scorer(SPACE, batches, backend=Recording(), seed=5) as scorer:
        scorer.score([arch])
    assert seen == [5, init_seed(5, SPACE.key(arch))]
