"""validation/scripts/ensemble_per_space.py and cross_benchmark_table.py on small synthetic run logs:
halves fixed by the row key alone (disjoint, one network never in both), members chosen on fit
rows only, and the table's cells, "not run" / "not computed" / unfinished columns and README markers."""
import hashlib
import json
import random
import re
import sys
from pathlib import Path

import pytest

from zico_fast.proxies import ALL, ENSEMBLE_MEMBERS
from zico_fast.proxies.split import split_of
from zico_fast.spaces import get_space
from zico_fast.truth import load_truth

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation" / "scripts"))
import cross_benchmark_table as cbt  # noqa: E402
import ensemble_per_space as eps  # noqa: E402

DATA = ROOT / "zico_fast" / "data"


def write_log(path: Path, space: str, table: str, rows, values_of, planned=None) -> Path:
    """A correlate log: header (space, truth table sha256 and column, planned rows), one record per row."""
    raw = (DATA / table).read_bytes()
    column = "cifar10_test_acc" if space == "nb201" else "cifar10_val_acc"
    truth = {"column": column, "sha256": hashlib.sha256(raw).hexdigest()}
    header = {"format": "zico_fast.run/1", "kind": "correlate",
              "settings": {"space": {"name": space}, "truth": truth, "rows": planned or len(rows)}}
    lines = [json.dumps(header)]
    for i, row in enumerate(rows):
        values = values_of(row)
        lines.append(json.dumps({"id": i, "arch_index": row.arch_index, "arch": row.arch, "repeat": 0,
                                 "score": values.get("zico", 0.0), "values": values, "error": None}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def nb201_rows(n=120):
    return load_truth(DATA / "nb201_dev.csv", get_space("nb201"), "cifar10_test_acc").rows[:n]


def fit_signal_values(seed=0, proxies=ALL):
    """naswot follows the truth on fit rows only, zico on report rows only; the rest is noise."""
    rng = random.Random(seed)

    def values(row):
        out = {p: rng.random() for p in proxies}
        if split_of(row.arch_index) == "fit":
            out["naswot"] = row.truth
        else:
            out["zico"] = row.truth
        return out

    return values


def test_halves_are_disjoint_fixed_by_the_key_and_blind_to_order_and_scores(tmp_path):
    rows = nb201_rows()
    a = eps.load_run(write_log(tmp_path / "a.jsonl", "nb201", "nb201_dev.csv", rows, fit_signal_values(0)))
    shuffled = random.Random(1).sample(rows, len(rows))
    b = eps.load_run(write_log(tmp_path / "b.jsonl", "nb201", "nb201_dev.csv", shuffled, fit_signal_values(7)))
    fit, report = eps.halves(a.rows)
    keys = {half: {r["arch_index"] for r in part} for half, part in (("fit", fit), ("report", report))}
    assert not keys["fit"] & keys["report"] and keys["fit"] | keys["report"] == {r.arch_index for r in rows}
    assert all(split_of(i) == half for half, ids in keys.items() for i in ids)  # NB201: split_of(arch_index)
    assert 0.3 < len(fit) / len(rows) < 0.7
    fit_b, report_b = eps.halves(b.rows)
    assert {r["arch_index"] for r in fit_b} == keys["fit"] and {r["arch_index"] for r in report_b} == keys["report"]


def test_one_network_under_several_indices_sits_in_one_half(tmp_path):
    space = get_space("nb101")
    rows = load_truth(DATA / "nb101_dev.csv", space, "cifar10_val_acc").rows
    run = eps.load_run(write_log(tmp_path / "nb101.jsonl", "nb101", "nb101_dev.csv", rows, lambda r: {"zico": r.truth}))
    by_network: dict[str, set[str]] = {}
    raw_halves: dict[str, set[str]] = {}
    for row, kept in zip(rows, run.rows):
        by_network.setdefault(space.key(row.arch), set()).add(split_of(kept["key"]))
        raw_halves.setdefault(space.key(row.arch), set()).add(split_of(row.arch_index))
    assert all(len(h) == 1 for h in by_network.values())
    assert any(len(h) == 2 for h in raw_halves.values())  # split by raw index, a network would straddle


def test_members_are_chosen_on_fit_rows_only(tmp_path):
    rows = nb201_rows()
    run = eps.load_run(write_log(tmp_path / "log.jsonl", "nb201", "nb201_dev.csv", rows, fit_signal_values(0)))
    result = eps.measure(run)
    assert result["path"][0]["members"] == ["naswot"] and result["path"][0]["fit_kendall_tau"] == pytest.approx(1.0)
    assert result["report"]["zico"]["kendall_tau"] == pytest.approx(1.0)  # perfect on report rows, never chosen first
    assert result["best_single"]["proxy"] == "zico"
    assert result["report"][eps.NB201_CHOSEN]["members"] == list(ENSEMBLE_MEMBERS)
    assert result["report"][eps.FIT_CHOSEN]["n"] == result["n_report"]
    # other report-half values: the same choice
    other = fit_signal_values(0)
    rng = random.Random(3)

    def scrambled(row):
        out = other(row)
        return out if split_of(row.arch_index) == "fit" else {p: rng.random() for p in ALL}

    again = eps.measure(eps.load_run(write_log(tmp_path / "again.jsonl", "nb201", "nb201_dev.csv", rows, scrambled)))
    assert again["path"] == result["path"]


CELL = re.compile(r"^-?\d\.\d{3} / -?\d\.\d{3} \(n=\d+, report\)$")


def test_table_cells_not_run_not_computed_and_unfinished_runs(tmp_path):
    rows = nb201_rows()
    without = [p for p in ALL if p != "trainability"]
    full = write_log(tmp_path / "c10" / "scores.jsonl", "nb201", "nb201_dev.csv", rows, fit_signal_values(0, without))
    short = write_log(tmp_path / "c100" / "scores.jsonl", "nb201", "nb201_dev.csv", rows, fit_signal_values(0),
                      planned=725)
    columns = {"NB201 C10": [str(full.parent)], "NB201 C100": [str(short.parent)], "NB301": [str(tmp_path / "none")]}
    lines = cbt.table(columns).splitlines()
    assert lines[0] == "| proxy | NB201 C10 | NB201 C100 | NB301 |"
    cells = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ")[1:] for line in lines[2:] if line.startswith("| ")}
    for proxy in without:
        assert CELL.match(cells[proxy][0]), cells[proxy]
    assert cells["trainability"][0] == cells[eps.NB201_CHOSEN][0] == cells[eps.SPACE_DEFAULT][0] == "not computed"
    assert CELL.match(cells[eps.FIT_CHOSEN][0])
    assert re.match(r"^[+-]\d\.\d{3} \(vs zico\)$", cells[cbt.MARGINS[eps.FIT_CHOSEN]][0])
    assert all(c[1] == "run not finished" and c[2] == "not run" for c in cells.values())
    assert any("120 of 725 rows logged, not reported" in line for line in lines)
    partial = cbt.table(columns, allow_partial=True).splitlines()
    assert "NB201 C100 PARTIAL 120/725" in partial[0]
    nb201_chosen = next(line for line in partial if line.startswith(f"| {eps.NB201_CHOSEN} |")).split(" | ")
    default = next(line for line in partial if line.startswith(f"| {eps.SPACE_DEFAULT} |")).split(" | ")
    assert CELL.match(nb201_chosen[2]) and default[2] == "= NB201-chosen"  # on NB201 they are one ensemble


def test_readme_markers_replace_only_the_table():
    text = f"intro\n{cbt.BEGIN}\nold table\n{cbt.END}\noutro\n"
    assert cbt.replace_between_markers(text, "new\n") == f"intro\n{cbt.BEGIN}\nnew\n{cbt.END}\noutro\n"
    with pytest.raises(SystemExit):
        cbt.replace_between_markers("no markers here\n", "new\n")
