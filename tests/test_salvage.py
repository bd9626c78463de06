"""Salvage of damaged run logs: a damaged middle line, a damaged tail line and two records run
together on one line lose no valid record; the damaged original is kept under a new name; the
error names the command; the resumed run scores only what was lost and ends as an undamaged run."""
import csv
import json
import threading

import pytest
import torch

from testing import without_timings
from zico_fast import truth as T
from zico_fast.cli import main
from zico_fast.correlate import correlate
from zico_fast.engine import InProcessBackend, RunLogError, read_run_log
from zico_fast.engine.run_lock import RunLock, RunLockedError
from zico_fast.engine.salvage import salvage
from zico_fast.search import search
from zico_fast.spaces.nb201 import NB201Space

SPACE = NB201Space(C=4, N=1, resolution=16)
# Some tiny networks score 0 (an all-zero cell), and the correlate test ranks only 7 rows on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:ZiCo score is 0"),
              pytest.mark.filterwarnings("ignore:the rank correlations rest on only")]


class CountingBackend(InProcessBackend):
    """Scores in this process and remembers which task ids it was given."""

    def __init__(self):
        self.scored = []

    def run(self, tasks):
        self.scored += [t.id for t in tasks]
        yield from super().run(tasks)


@pytest.fixture(scope="module")
def batches():
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]


def run_search(log, batches, backend=None):
    return search(SPACE, batches, iterations=12, population=4, generation=3, strategy="random", seed=2,
                  log_path=log, threads=1, backend=backend or InProcessBackend())


def damage(log):
    """Line 4 (record 2) garbled, records 5 and 6 run together, the last line (record 11) garbled."""
    lines = log.read_bytes().split(b"\n")[:-1]
    lines[3] = b'{"id": 2, "arch": "|nor_co\x00\xff garbage'
    lines[6:8] = [lines[6] + lines[7]]
    lines[-1] = lines[-1][:60]
    log.write_bytes(b"\n".join(lines) + b"\n")


def test_salvage_keeps_every_valid_record_and_the_search_resumes(batches, tmp_path):
    reference = run_search(tmp_path / "reference.jsonl", batches)
    assert all(r["cached_from"] is None for r in reference.records)  # so a lost record must be scored again
    log = tmp_path / "search.jsonl"
    run_search(log, batches)
    damage(log)
    damaged = log.read_bytes()
    with pytest.raises(RunLogError, match=rf"{log}:4: not a JSON line .*`zico-fast salvage {log}` keeps every"):
        run_search(log, batches)
    report = salvage(log)
    assert report.kept == 10 and report.damaged_lines == [4, 12] and report.split_lines == [7]
    assert report.moved_to.read_bytes() == damaged and report.moved_to.name.startswith("search.jsonl.damaged-")
    kept = read_run_log(log)[1]
    assert [r["id"] for r in kept] == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert without_timings(kept) == without_timings([r for r in reference.records if r["id"] not in (2, 11)])
    counting = CountingBackend()
    resumed = run_search(log, batches, counting)
    assert sorted(counting.scored) == [2, 11]  # only what was lost
    assert without_timings(resumed.records) == without_timings(reference.records)
    assert resumed.best_arch == reference.best_arch and resumed.history == reference.history
    assert salvage(log).moved_to is None  # a whole log (records 2 and 11 now at its end) is left as it is


def test_repeated_ids_and_a_torn_tail_are_repaired_the_first_record_kept(batches, tmp_path):
    log = tmp_path / "search.jsonl"
    run_search(log, batches)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines) + lines[3] + lines[5][:30])  # a second writer's copy, then a torn record
    with pytest.raises(RunLogError, match="holds iteration 2 twice; `zico-fast salvage"):
        run_search(log, batches)
    report = salvage(log)
    assert report.repeated == 1 and report.kept == 12
    assert read_run_log(log)[1] == [json.loads(line) for line in lines[1:]]


def test_salvage_refuses_a_log_a_run_holds_and_a_lost_header(batches, tmp_path):
    log = tmp_path / "search.jsonl"
    run_search(log, batches)
    refused = []

    def salvage_beside_the_run():
        try:
            salvage(log)
        except RunLockedError as error:
            refused.append(error)

    with RunLock(log):  # a run holds the log; salvage (here from another thread) must wait its turn
        thread = threading.Thread(target=salvage_beside_the_run)
        thread.start()
        thread.join()
    assert refused
    original = log.read_bytes()
    log.write_bytes(b"garbage\n" + original.split(b"\n", 1)[1])
    with pytest.raises(RunLogError, match="1: not a zico_fast.run/1 header"):
        salvage(log)
    assert not list(tmp_path.glob("*.damaged-*"))


def truth_table(tmp_path):
    path = tmp_path / "truth.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch_index", "arch_string", "cifar10_test_acc"])
        writer.writerows([i, SPACE.arch_from_index(i), 80.0 + i % 13] for i in (0, 5, 97, 500, 1234, 4096, 7777))
    return T.load_truth(path, SPACE)


def test_a_salvaged_correlate_log_resumes_scoring_only_the_lost_rows(batches, tmp_path):
    table = truth_table(tmp_path)

    def run(log, backend=None):
        return correlate(SPACE, [batches], log_path=log, truth=table, threads=1, backend=backend or InProcessBackend())

    reference = run(tmp_path / "reference.jsonl")
    log = tmp_path / "scores.jsonl"
    run(log)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + "{not json\n" + "".join(lines[4:]))  # row 2 lost
    assert salvage(log).kept == 6
    counting = CountingBackend()
    resumed = run(log, counting)
    assert counting.scored == [2]
    assert without_timings(resumed.records) == without_timings(reference.records)
    assert resumed.report["correlations"] == reference.report["correlations"]


def test_cli_salvage_of_a_folder(batches, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--space", "nb201", "--synthetic", "--batch-size", "8", "--resolution", "16",
            "--iterations", "6", "--population", "4", "--generation", "2", "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert main(args) == 0
    log = out / "search.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:30] + "\n" + "".join(lines[3:]))  # record 1 cut short
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"`zico-fast salvage {log}`" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert main(["salvage", str(out)]) == 0
    said = capsys.readouterr().out
    assert "kept 5 records; dropped 1 damaged piece(s) of line(s) 3" in said and ".damaged-" in said
    assert main(args) == 0
    assert [r["id"] for r in read_run_log(log)[1]] == [0, 2, 3, 4, 5, 1]  # the lost one redone, at the end
    assert main(["salvage", str(tmp_path)]) == 2  # no run log there: one line
    assert "holds no run log" in capsys.readouterr().err
