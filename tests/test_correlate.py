"""`zico-fast correlate`: rank statistics, truth-file checks, outputs, resuming."""
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from zico_fast import correlate as C
from zico_fast.spaces.nb201 import NB201Space

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
    c = C.rank_correlations(x, y)
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
    c = C.rank_correlations([1, 2, 3], [1, 3, 2])
    assert c["kendall_tau"] == pytest.approx(1 / 3) and c["spearman"] == pytest.approx(0.5)
    c = C.rank_correlations([1, 1, 2, 3], [1, 2, 3, 4])
    assert c["kendall_tau"] == pytest.approx(5 / math.sqrt(30))
    c = C.rank_correlations([1, float("nan"), 2, 3, float("inf")], [1, 5, 2, 3, 0])  # non-finite pairs dropped
    assert c["n"] == 3 and c["kendall_tau"] == pytest.approx(1.0)
    assert math.isnan(C.rank_correlations([1, 1, 1], [1, 2, 3])["kendall_tau"])  # constant side
    assert math.isnan(C.rank_correlations([1], [2])["spearman"])


# ---- truth files ---------------------------------------------------------------------------------
def test_load_truth_reads_rows_and_compare_columns(tmp_path):
    table = C.load_truth(write_truth(tmp_path / "t.csv", good_rows()), SPACE)
    assert [r.arch_index for r in table.rows] == INDICES
    assert table.compare_columns == ["naslib_synflow"]
    assert table.rows[1].compare["naslib_synflow"] == 100 % 13
    table = C.load_truth(tmp_path / "t.csv", SPACE, compare=[])
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
    with pytest.raises(C.CorrelateError) as error:
        C.load_truth(path, SPACE)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    path = write_truth(tmp_path / "bad.csv", [[1] + good_rows()[0][1:]])
    assert C.main(["correlate", "--truth", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zico-fast correlate: error:") and "arch_index says 1" in err and "\n" not in err
    assert C.main(["correlate", "--truth", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = write_truth(tmp_path / "good.csv", good_rows())
    assert C.main(["correlate", "--truth", str(good), "--out", str(tmp_path / "o"), "--compare", "nope"]) == 2
    assert "--compare column(s) nope" in capsys.readouterr().err
    assert C.main(["correlate", "--truth", str(good), "--out", str(tmp_path / "o"), "--sample", "99"]) == 2
    assert "outside 1..6" in capsys.readouterr().err


def test_sampling_and_init_seeds_are_deterministic():
    rows = list(range(50))
    assert C.sample_rows(rows, 5, 3) == C.sample_rows(rows, 5, 3) != C.sample_rows(rows, 5, 4)
    assert C.sample_rows(rows, 5, 3) == sorted(C.sample_rows(rows, 5, 3))
    assert C.sample_rows(rows, None, 3) == rows
    assert C.arch_seed(0, 1) == C.arch_seed(0, 1) != C.arch_seed(1, 0)
    assert 0 <= C.arch_seed(2**40, 15624) < 2**63


# ---- end to end ----------------------------------------------------------------------------------
TINY = dict(sample=4, seed=0, batch_size=8, num_batches=2, workers=1, threads=1, progress=False)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_end_to_end_writes_all_outputs(tmp_path):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    report = C.correlate(truth, out, **TINY)
    for name in ("report.json", "scores.csv", "summary.md", "scatter.png", "scores.jsonl"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["n"] == 4 and saved["batch_size"] == 8 and saved["seed"] == 0 and saved["data"] == "bundled"
    assert set(saved["correlations"]) == {"zico", "params", "flops", "naslib_synflow"}
    assert saved["machine"]["torch"] and saved["timings"]["seconds_per_arch_mean"] > 0
    with open(out / "scores.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and all(math.isfinite(float(r["zico"])) for r in table)
    assert {r["arch_index"] for r in table} <= {str(i) for i in INDICES}
    first = table[0]
    cost = SPACE.cost(first["arch_string"])
    assert int(first["params"]) == cost.params and int(first["flops"]) == cost.flops
    # the report's statistics are those of the CSV's columns
    z = [float(r["zico"]) for r in table]
    acc = [float(r["cifar10_test_acc"]) for r in table]
    assert report["correlations"]["zico"]["kendall_tau"] == pytest.approx(stats.kendalltau(z, acc).statistic)
    assert "| **ZiCo (ours)** |" in (out / "summary.md").read_text()
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_without_rescoring(tmp_path, monkeypatch):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    C.correlate(truth, out, **TINY)
    log = out / "scores.jsonl"
    complete = read_jsonl(log)
    assert len(complete) == 5 and "settings" in complete[0]
    # simulate a kill: two records survive, the third was cut mid-write
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][:25])
    calls = []
    original = C._score_task
    monkeypatch.setattr(C, "_score_task", lambda task: calls.append(task[0]) or original(task))
    C.correlate(truth, out, **TINY)
    assert sorted(calls) == sorted(r["arch_index"] for r in complete[3:])
    resumed = read_jsonl(log)
    assert len(resumed) == 5 and resumed[:3] == complete[:3]
    by_index = {r["arch_index"]: r["zico"] for r in complete[1:]}
    assert all(r["zico"] == by_index[r["arch_index"]] for r in resumed[1:])  # same seeds, same scores
    calls.clear()
    C.correlate(truth, out, **TINY)  # nothing left to score
    assert calls == [] and len(read_jsonl(log)) == 5
    with pytest.raises(C.CorrelateError, match="different settings.*batch_size: 8 there, 16 now"):
        C.correlate(truth, out, **{**TINY, "batch_size": 16})


def test_stability_mode_reports_spread_and_pairwise_agreement(tmp_path):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    report = C.correlate(truth, tmp_path / "run", **{**TINY, "sample": 3, "repeats": 2, "data_seed": 5})
    st = report["stability"]
    assert st["repeats"] == 2 and st["data_seeds"] == [5, 6]
    assert len(st["per_run"]) == 2 and len(st["pairwise_between_runs"]) == 1
    k = st["zico_kendall_tau"]
    assert k["min"] <= k["mean"] <= k["max"]
    with open(tmp_path / "run" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["zico"] == rows[0]["zico_r0"] and "zico_r1" in rows[0]
    assert len(read_jsonl(tmp_path / "run" / "scores.jsonl")) == 1 + 6


def test_add_parser_defaults_are_the_papers_settings():
    import argparse

    parser = argparse.ArgumentParser(prog="zico-fast")
    C.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["correlate", "--truth", "t.csv", "--out", "o", "--compare", "naslib_a, naslib_b"])
    assert args.func is C.run_from_args
    assert (args.batch_size, args.batches, args.seed, args.data_seed, args.repeats) == (128, 2, 0, 0, 1)
    assert args.space == "nb201" and args.sample is None and args.compare == ["naslib_a", "naslib_b"]


def test_resume_refuses_another_thread_count(tmp_path):
    truth = write_truth(tmp_path / "t.csv", good_rows())
    out = tmp_path / "run"
    C.correlate(truth, out, **TINY)
    log = out / "scores.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(C.CorrelateError, match="1 intra-op thread.*would use 2.*--threads 1"):
        C.correlate(truth, out, **{**TINY, "threads": 2})
    C.correlate(truth, out, **TINY)  # the same count resumes
    assert len(read_jsonl(log)) == 5
