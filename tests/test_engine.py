"""The run engine: the run log (readers never write, the resuming writer repairs, errors name file
and line), the seed rule, crash isolation in the process backend, and logs that do not depend on the
backend or on the order in which results arrive."""
import json
import os

import pytest
import torch

from engine_spaces import CrashingSpace
from testing import logged_without_timings
from zico_fast.correlate import correlate
from zico_fast.errors import ZiCoUserError
from zico_fast.engine import (InProcessBackend, ProcessBackend, RunLog, RunLogError, Task, WorkerConfig,
                              build_seeded, init_seed, read_run_log)
from zico_fast.search import search
from zico_fast.spaces.nb201 import NB201Space

SPACE = NB201Space(C=4, N=1, resolution=16)


@pytest.fixture(scope="module")
def batches():
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]


def test_run_log_round_trip_and_torn_tail(tmp_path):
    path = tmp_path / "run.jsonl"
    log = RunLog(path, "search")
    assert log.open({"seed": 1}) == []
    assert not path.exists()  # the header comes with the first record
    for i in range(2):
        log.append({"id": i, "x": i})
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"id": 2, "x"')  # killed mid-write
    torn = path.read_bytes()
    header, records = read_run_log(path)
    assert header["settings"] == {"seed": 1} and [r["id"] for r in records] == [0, 1]
    assert path.read_bytes() == torn  # a reader never writes
    log = RunLog(path, "search")
    assert [r["id"] for r in log.open({"seed": 1})] == [0, 1]
    log.append({"id": 2, "x": 2})
    log.close()
    assert [r["x"] for r in read_run_log(path)[1]] == [0, 1, 2]
    with pytest.raises(RunLogError, match=r"other settings \(seed: 1 -> 2\)"):
        RunLog(path, "search").open({"seed": 2})
    with pytest.raises(RunLogError, match="is a search log, not a correlate log"):
        RunLog(path, "correlate").open({"seed": 1})


def test_unwritable_log_is_a_clear_error_and_keeps_what_was_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("the user's own")
    log = RunLog(blocker / "run" / "run.jsonl", "search")
    with pytest.raises(ZiCoUserError, match=r"cannot lock .*a_file/run/run.jsonl: .*Not a directory"):
        log.open({"seed": 1})  # its lock file, beside the log, cannot be made: refused before any work
    assert blocker.read_text() == "the user's own"
    path = tmp_path / "run.jsonl"
    log = RunLog(path, "search")
    log.open({"seed": 1})
    log.append({"id": 0, "x": 0})
    full = os.open("/dev/full", os.O_WRONLY)  # every write there fails with ENOSPC: a full disk
    os.dup2(full, log._file.fileno())
    os.close(full)
    with pytest.raises(RunLogError, match=r"\(No space left on device\); the records written before"):
        log.append({"id": 1, "x": 1})
    assert [r["id"] for r in read_run_log(path)[1]] == [0]


def test_damaged_logs_name_file_and_line(tmp_path):
    path = tmp_path / "run.jsonl"
    header = json.dumps({"format": "zico_fast.run/1", "kind": "search", "settings": {}})
    path.write_text(header + '\n{"id": 0}\nnot json\n')
    with pytest.raises(RunLogError, match=rf"{path}:3: not a JSON line"):
        read_run_log(path)
    path.write_text(header + '\n{"id": 0}\n{"iteration": 1}\n')  # valid JSON, not a record
    with pytest.raises(RunLogError, match=rf"{path}:3: a JSON line without id"):
        RunLog(path, "search").open({})
    path.write_text('{"some": "other file"}\n')
    with pytest.raises(RunLogError, match=rf"{path}:1: not a zico_fast.run/1 header"):
        read_run_log(path)


def test_run_log_flushes_every_record_and_syncs_in_groups(tmp_path, monkeypatch):
    """Each record reaches the OS at once (a reader sees it before close, as after kill -9); fsync
    runs for the first record, then at most once per SYNC_INTERVAL, and at close."""
    from zico_fast.engine import run_log

    synced = []
    monkeypatch.setattr(run_log.os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "run.jsonl"
    log = RunLog(path, "search")
    log.open({"seed": 1})
    for i in range(50):
        log.append({"id": i})
        assert [r["id"] for r in read_run_log(path)[1]] == list(range(i + 1))
    assert 1 <= len(synced) < 10  # 50 records in well under SYNC_INTERVAL * 9
    log.close()
    assert len(synced) >= 2  # close syncs what came after the last group
    monkeypatch.setattr(run_log, "SYNC_INTERVAL", 0.0)
    synced.clear()
    log = RunLog(path, "search")
    log.open({"seed": 1})
    for i in range(50, 55):
        log.append({"id": i})
    assert len(synced) == 5
    log.close()


def test_seed_rule_depends_on_seed_and_key_only():
    arch = SPACE.arch_from_index(1234)
    assert init_seed(0, SPACE.key(arch)) == init_seed(0, arch) != init_seed(1, arch)
    before = torch.random.get_rng_state()
    a, b = build_seeded(SPACE, arch, 7), build_seeded(SPACE, arch, 7)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_task_carries_its_init_seed(batches):
    """A task's init_seed (the run computes it) is the one its network is drawn from; without it the
    worker applies the seed rule itself, to the same bits."""
    arch = SPACE.arch_from_index(4321)
    backend = InProcessBackend()
    backend.start(WorkerConfig(SPACE, [batches], "cpu", 1, 5))
    rule = init_seed(5, SPACE.key(arch))
    without, given, other = (next(backend.run([Task(0, arch, init_seed=s)]))[1] for s in (None, rule, rule ^ 1))
    assert without["init_seed"] == given["init_seed"] == rule and without["score"] == given["score"] is not None
    assert other["init_seed"] == rule ^ 1 and other["score"] != given["score"]


@pytest.mark.slow
def test_a_native_crash_fails_its_candidate_alone(batches):
    """The worker holds the next task in its pipe when it crashes (tasks are sent ahead): that task
    must be scored by the replacement, once, and only the crashing one fails."""
    space = CrashingSpace()
    archs = [space.arch_from_index(i) for i in (1, 3, 2, 6, 4)]  # 3 and 6 crash
    config = WorkerConfig(space, [batches], "cpu", 1, 0)
    backend = ProcessBackend(1)
    backend.start(config)
    try:
        answers = [(task.id, rec) for task, rec in backend.run([Task(i, a) for i, a in enumerate(archs)])]
    finally:
        backend.close()
    assert sorted(i for i, _ in answers) == list(range(len(archs)))  # each task answered exactly once
    got = dict(answers)
    assert backend.respawned == 2
    for i, arch in enumerate(archs):
        if space.crashes(arch):
            assert got[i]["score"] is None and "SIGSEGV" in got[i]["error"]
        else:
            plain = InProcessBackend()
            plain.start(config)
            assert got[i]["score"] == next(plain.run([Task(i, arch)]))[1]["score"]  # bit for bit


@pytest.mark.slow
def test_search_goes_on_past_native_crashes(batches, tmp_path):
    space = CrashingSpace(every=2)
    result = search(space, batches, iterations=6, population=4, generation=3, strategy="random",
                    log_path=tmp_path / "log.jsonl", threads=1, workers=2)
    records = read_run_log(tmp_path / "log.jsonl")[1]
    crashed = [r for r in records if space.crashes(r["arch"])]
    assert result.iterations == 6 and crashed and result.failed == len(crashed)
    assert all("died (killed by SIGSEGV)" in r["error"] for r in crashed if r["cached_from"] is None)


class ReversedBackend(InProcessBackend):
    """Returns every batch of results in reverse order, as a slow first worker would."""

    def run(self, tasks):
        return reversed(list(super().run(tasks)))


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_arrival_order_never_changes_a_log(batches, tmp_path):
    for name, backend in (("in_order", InProcessBackend()), ("reversed", ReversedBackend())):
        search(SPACE, batches, iterations=8, population=3, generation=4, seed=2, threads=1,
               log_path=tmp_path / f"search_{name}.jsonl", backend=backend)
    assert logged_without_timings(tmp_path / "search_in_order.jsonl") == logged_without_timings(tmp_path / "search_reversed.jsonl")
    for name, backend in (("in_order", InProcessBackend()), ("reversed", ReversedBackend())):
        correlate(SPACE, [batches], log_path=tmp_path / f"cor_{name}.jsonl", sample=4, threads=1, backend=backend)
    assert logged_without_timings(tmp_path / "cor_in_order.jsonl") == logged_without_timings(tmp_path / "cor_reversed.jsonl")


def test_more_workers_than_cpus_warns_once_and_no_more_is_quiet(monkeypatch, recwarn):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    ProcessBackend(4)  # nothing starts before start(): constructing one is free
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    with pytest.warns(RuntimeWarning, match=r"5 worker processes on 4 CPUs .* --workers 4 or fewer"):
        ProcessBackend(5)
