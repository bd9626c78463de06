"""Flat per-architecture tables: correlate's scores.csv (arch_index, arch, truth, every proxy, error)
and search's candidates.csv (the fitness the search ranked by, named, and every proxy computed)."""
import csv
import json
import math

import pytest

from zico_fast.cli import main

SMALL = ["--synthetic", "--batch-size", "8", "--resolution", "16", "--no-progress"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def number(text):
    return math.nan if text == "" else float(text)


@pytest.mark.filterwarnings("ignore::zico_fast.ranking.FewRowsWarning")  # a few rows on purpose
def test_correlate_writes_one_row_per_architecture(tmp_path):
    out = tmp_path / "cor"
    assert main(["correlate", "--sample", "6", "--proxies", "zico,naswot", *SMALL, "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["arch_index", "arch", "truth", "zico", "naswot", "error"]
    log = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    assert [int(r["arch_index"]) for r in rows] == [r["arch_index"] for r in log]
    for row, record in zip(rows, log):
        assert row["arch"] == record["arch"] and number(row["zico"]) == record["values"]["zico"]
        assert number(row["naswot"]) == record["values"]["naswot"] and row["error"] == (record["error"] or "")
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == len(rows) == 6 and all(number(r["truth"]) > 0 for r in rows)


@pytest.mark.slow
def test_search_candidates_carry_the_ranked_fitness_and_every_proxy(tmp_path):
    out = tmp_path / "search"
    assert main(["search", "--iterations", "8", "--population", "4", "--generation", "4", "--fitness", "ensemble",
                 *SMALL, "--out", str(out)]) == 0
    rows = read_csv(out / "candidates.csv")
    columns = list(rows[0])
    assert columns[:5] == ["id", "arch", "fitness", "fitness_name", "zico"] and "naswot" in columns
    assert all(r["fitness_name"] == "ensemble" for r in rows)
    scored = [r for r in rows if r["zico"] != ""]
    assert any(r["fitness"] != r["zico"] for r in scored)  # the ensemble, not ZiCo under another name
    best = json.loads((out / "best.json").read_text())
    top = max(scored, key=lambda r: float(r["fitness"]))
    assert top["arch"] == best["arch"] and float(top["fitness"]) == pytest.approx(best["score"])


def test_a_zico_search_ranks_by_zico(tmp_path):
    out = tmp_path / "search"
    assert main(["search", "--iterations", "3", "--population", "2", *SMALL, "--workers", "1", "--out", str(out)]) == 0
    rows = read_csv(out / "candidates.csv")
    assert all(r["fitness"] == r["zico"] != "" and r["fitness_name"] == "zico" for r in rows)
