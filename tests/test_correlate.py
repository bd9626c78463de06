"""`zico-fast correlate`: rank statistics, truth-file checks, outputs, resuming."""
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from zico_fast import ranking, truth as T
from zico_fast.cli import main
from zico_fast.correlate import correlate
from zico_fast.engine import InProcessBackend, read_run_log
from zico_fast.spaces.nb201 import NB201Space
from testing import without_timings

SPACE = NB201Space()
INDICES = [0, 100, 5000, 12345, 777, 15624]


def write_truth(path, rows, header=("arch_index", "arch_string", "cifar10_test_acc", "naslib_synflow")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def good_rows(indices=INDICES):
    return [[i, SPACE.arch_from_index(i), 80.0 + (i % 97) / 10, float(i % 13)] for i in indices]


# ---- rank statistics -------------------------------------------------------------------------
@pytest.mark.parametrize("x, y", [
    ([1, 2, 3], [1, 3, 2]),
    ([1, 1, 2, 3], [1, 2, 3, 4]),  # a tie in x
    ([3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]),  # ties on both sides
    (list(range(20)), [v % 5 for v in range(20)]),
])
def test_rank_correlations_match_scipy(x, y):
    c = ranking.rank_correlations(x, y)
    assert c["n"] == len(x)
    assert c["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert c["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    # independent definitions: Spearman = Pearson of average ranks; tau-b from pair counts
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    assert c["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            conc += s > 0
            disc += s < 0
            tx += x[i] == x[j]
            ty += y[i] == y[j]
    pairs = n * (n - 1) / 2
    assert c["kendall_tau"] == pytest.approx((conc - disc) / math.sqrt((pairs - tx) * (pairs - ty)), abs=1e-12)


def test_rank_correlations_known_values_and_edge_cases():
    c = ranking.rank_correlations([1, 2, 3], [1, 3, 2])
    assert c["kendall_tau"] == pytest.approx(1 / 3) and c["spearman"] == pytest.approx(0.5)
    c = ranking.rank_correlations([1, 1, 2, 3], [1, 2, 3, 4])
    assert c["kendall_tau"] == pytest.approx(5 / math.sqrt(30))
    c = ranking.rank_correlations([1, float("nan"), 2, 3, float("inf")], [1, 5, 2, 3, 0])  # non-finite pairs dropped
    assert c["n"] == 3 and c["kendall_tau"] == pytest.approx(1.0)
    assert math.isnan(ranking.rank_correlations([1, 1, 1], [1, 2, 3])["kendall_tau"])  # constant side
    assert math.isnan(ranking.rank_correlations([1], [2])["spearman"])


# ---- truth files ---------------------------------------------------------------------------------
def test_load_truth_reads_rows_and_compare_columns(tmp_path):
    table = T.load_truth(write_truth(tmp_path / "t.csv", good_rows()), SPACE)
    assert [r.arch_index for r in table.rows] == INDICES
    assert table.compare_columns == ["naslib_synflow"]
    assert table.rows[1].compare["naslib_synflow"] == 100 % 13
    table = T.load_truth(tmp_path / "t.csv", SPACE, compare=[])
    assert table.compare_columns == []


@pytest.mark.parametrize("mutate, message", [
    (lambda h, rows: (h[:2] + h[3:], [r[:2] + r[3:] for r in rows]), "lacks column(s) cifar10_test_acc"),
    (lambda h, rows: (h, rows[:2] + [rows[2][:2] + ["high"] + rows[2][3:]] + rows[3:]), ":4: cifar10_test_acc is 'high'"),
    (lambda h, rows: (h, rows[:1] + [rows[1][:2] + [""] + rows[1][3:]] + rows[2:]), ":3: cifar10_test_acc is ''"),
    (lambda h, rows: (h, [[5000] + rows[0][1:]] + rows[1:]), "is nb201 index 0, but arch_index says 5000"),
    (lambda h, rows: (h, [["x7"] + rows[0][1:]] + rows[1:]), "arch_index is 'x7', not an integer"),
    (lambda h, rows: (h, [[0, "|conv~0|+|x|"] + rows[0][2:]] + rows[1:]), ":2: invalid arch_string"),
    (lambda h, rows: (h, rows + [rows[0]]), "arch_index 0 already appears on line 2"),
    (lambda h, rows: (h, [rows[0][:3] + ["fast"]] + rows[1:]), "naslib_synflow is 'fast', not a number"),
])
def test_bad_truth_files_give_clear_errors(tmp_path, mutate, message):
    header, rows = mutate(["arch_index", "arch_string", "cifar10_test_acc", "naslib_synflow"], good_rows())
    path = write_truth(tmp_path / "bad.csv", rows, header)
    with pytest.raises(T.TruthError) as error:
        T.load_truth(path, SPACE)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    path = write_truth(tmp_path / "bad.csv", [[1] + good_rows()[0][1:]])
    assert main(["correlate", "--truth", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zico-fast correlate: error:") and "arch_index says 1" in err and "\n" not in err
    assert main(["correlate", "--truth", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = write_truth(tmp_path / "good.csv", good_rows())
    assert main(["correlate", "--truth", str(good), "--out", str(tmp_path / "o"), "--compare", "nope"]) == 2
    assert "compare column(s) nope" in capsys.readouterr().err
    assert main(["correlate", "--truth", str(good), "--out", str(tmp_path / "o"), "--sample", "99"]) == 2
    assert "outside 1..6" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a run that never started


def test_sampling_is_deterministic():
    rows = list(range(50))
    assert T.sample_rows(rows, 5, 3) == T.sample_rows(rows, 5, 3) != T.sample_rows(rows, 5, 4)
    assert T.sample_rows(rows, 5, 3) == sorted(T.sample_rows(rows, 5, 3))
    assert T.sample_rows(rows, None, 3) == rows


# ---- end to end ----------------------------------------------------------------------------------
TINY = ["--sample", "4", "--batch-size", "8", "--device", "cpu", "--no-progress"]


def run_cli(truth, out, *extra):
    return main(["correlate", "--truth", str(truth), "--out", str(out), *TINY, *extra])


def test_end_to_end_writes_the_layout(tmp_path, capsys):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    assert run_cli(truth, out) == 0
    assert "fewer than 10" in capsys.readouterr().err  # 4 rows: warned
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "scatter.png", "scores.csv", "scores.jsonl", "summary.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 4 and report["data"]["batch_size"] == 8 and report["settings"]["seed"] == 0
    assert set(report["correlations"]) == {"zico", "params", "flops", "naslib_synflow"}
    assert report["truth_file"] == "t.csv" and str(tmp_path) not in (out / "report.json").read_text()
    header, records = read_run_log(out / "scores.jsonl")
    assert header["kind"] == "correlate" and len(records) == 4
    z = [r["score"] for r in records]
    acc = [next(row[2] for row in good_rows() if row[0] == r["arch_index"]) for r in records]
    assert report["correlations"]["zico"]["kendall_tau"] == pytest.approx(stats.kendalltau(z, acc).statistic)
    cost = SPACE.cost(records[0]["arch"])
    assert report["correlations"]["params"]["n"] == 4 and cost.params > 0
    assert "| **ZiCo (ours)** |" in (out / "summary.md").read_text()
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_without_rescoring(tmp_path, capsys):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    assert run_cli(truth, out) == 0
    log = out / "scores.jsonl"
    complete = read_run_log(log)[1]
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][:25])  # a kill: two records kept, the third cut mid-write
    assert run_cli(truth, out) == 0
    assert read_run_log(log)[1][:2] == complete[:2]
    assert [r["score"] for r in read_run_log(log)[1]] == [r["score"] for r in complete]  # same seeds, same scores
    before = log.read_bytes()
    assert run_cli(truth, out) == 0 and log.read_bytes() == before  # nothing left to score
    capsys.readouterr()
    assert run_cli(truth, out, "--batch-size", "16") == 2
    assert "other settings" in capsys.readouterr().err
    assert run_cli(truth, out, "--threads", "2") == 2  # scores depend on the thread count
    assert "repro.threads: 1 -> 2" in capsys.readouterr().err


def test_report_only_reports_the_logged_prefix_without_writing_the_log(tmp_path, capsys):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    assert run_cli(truth, out) == 0
    full = json.loads((out / "report.json").read_text())
    log = out / "scores.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:4]) + lines[4][:20])  # a run still writing: 3 records and a torn line
    before = log.read_bytes()
    assert run_cli(truth, out, "--report-only") == 0
    assert log.read_bytes() == before  # read only: the torn line is the writer's to repair
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and (report["rows_scored"], report["rows_total"]) == (3, 4)
    z = [r["score"] for r in read_run_log(log)[1]]
    acc = [next(row[2] for row in good_rows() if row[0] == r["arch_index"]) for r in read_run_log(log)[1]]
    assert report["correlations"]["zico"]["kendall_tau"] == pytest.approx(stats.kendalltau(z, acc).statistic)
    assert "Partial run: 3 of 4 rows" in (out / "summary.md").read_text()
    assert run_cli(truth, out) == 0  # resuming completes it: the same report as the uninterrupted run
    assert json.loads((out / "report.json").read_text())["correlations"] == full["correlations"]
    capsys.readouterr()
    assert run_cli(truth, out, "--report-only", "--batch-size", "16") == 2  # other settings: refused
    assert "other settings" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_stability_mode_reports_spread_and_pairwise_agreement(tmp_path):
    rows = T.load_truth(write_truth(tmp_path / "t.csv", good_rows()), SPACE)
    from zico_fast.data import make_batches

    sets = [make_batches(None, 8, 2, seed) for seed in (5, 6)]
    result = correlate(SPACE, sets, log_path=tmp_path / "s.jsonl", truth=rows, sample=3, threads=1,
                       backend=InProcessBackend())
    st = result.report["stability"]
    assert st["repeats"] == 2 and len(st["per_run"]) == 2 and len(st["pairwise_between_runs"]) == 1
    k = st["zico_kendall_tau"]
    assert k["min"] <= k["mean"] <= k["max"]
    assert len(read_run_log(tmp_path / "s.jsonl")[1]) == 6


def test_correlate_defaults_are_the_papers_settings():
    from zico_fast.cli import build_parser

    args = build_parser().parse_args(["correlate", "--out", "o"])
    assert (args.batch_size, args.batches, args.seed, args.data_seed, args.repeats) == (128, 2, 0, 0, 1)
    assert args.space == "nb201" and args.sample is None and args.truth is None
    assert T.bundled_truth("nb201").name == "nb201_dev.csv"


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_repeated_architectures_are_scored_once_and_copied_exactly(tmp_path):
    # NAS-Bench files list one cell under several rows; each distinct cell is scored once per batch
    # set, and every copy must equal what scoring that row on its own gives.
    from zico_fast.data import make_batches
    from zico_fast.engine.evaluate import DEFAULT_PROXIES, score_candidate
    from zico_fast.engine.repro import torch_settings
    from zico_fast.spaces.nb101 import NB101Space

    small = NB101Space(stem=8, stacks=1, cells_per_stack=1)
    cells = ["input|conv3x3-bn-relu<0|output<1", "input|conv1x1-bn-relu<0|maxpool3x3<1|output<0,2",
             "input|conv3x3-bn-relu<0|conv1x1-bn-relu<1|output<0,2"]
    order = [0, 1, 0, 2, 1, 0]
    path = write_truth(tmp_path / "t.csv", [[i, cells[c], 80.0 + i, 0.0] for i, c in enumerate(order)])
    table = T.load_truth(path, small, "cifar10_test_acc", None)
    sets = [make_batches(None, 4, 2, seed) for seed in (1, 2)]

    class Counting(InProcessBackend):
        def run(self, tasks):
            self.sent = getattr(self, "sent", []) + [t.arch for t in tasks]
            yield from reversed(list(super().run(tasks)))  # out of order, too

    backend = Counting()
    log = tmp_path / "s.jsonl"
    records = correlate(small, sets, log_path=log, truth=table, threads=1, backend=backend).records
    assert sorted(backend.sent) == sorted(cells * 2)  # three cells x two batch sets, nothing more
    assert [r["id"] for r in records] == list(range(12)) and read_run_log(log)[1] == records
    for r in records:
        with torch_settings(1):  # the thread count the run scored with
            alone = score_candidate(small, r["arch"], sets[r["repeat"]], 0, "cpu", DEFAULT_PROXIES)
        assert r["score"] == alone["score"] and r["init_seed"] == alone["init_seed"]  # bit for bit
        first = next(f for f in records if f["arch"] == r["arch"] and f["repeat"] == r["repeat"])
        assert r["cached_from"] == (None if r is first else first["id"])
        assert (r["seconds"] is None) == (r is not first)

    # a resumed run copies from the records an earlier run logged, and scores only what is new
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]))  # header + rows 0 and 1 (cells 0 and 1 of batch set 0)
    backend = Counting()
    resumed = correlate(small, sets, log_path=log, truth=table, threads=1, backend=backend).records
    assert sorted(backend.sent) == sorted([cells[2]] + cells)
    assert without_timings(resumed) == without_timings(records)
