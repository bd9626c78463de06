"""Ensemble members for one space, chosen on the fixed fit half of its rows, measured on the other half.

RUN is a correlate run: its folder or its scores.jsonl (only read; a run in progress is read as far as
it goes). Rows are joined by arch_index with the bundled truth table the run read (found by the
sha256 in the log's header; on a table changed since, every row's architecture is checked).

Halves, fixed by the row key before any score is read: zico_fast.proxies.split.split_of(key), a
sha256 of a fixed salt and the key. The key is the arch_index of the first row holding that network
(space.key), so a network logged under several indices (NASLib's NB101 sample) never sits in both
halves; where networks are distinct (NB201) it is split_of(arch_index), the halves the NB201 members
were chosen on.

Fit half: greedy_members over every proxy the run computed (forward selection by Kendall tau).
Report half: every proxy, the NB201-chosen ensemble unchanged (ENSEMBLE_MEMBERS), the space's default
(members_for) and the fit-half choice, each population ranked within the report half.

usage: python validation/scripts/ensemble_per_space.py RUN [--out FILE.md]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from zico_fast.proxies import ALL, ENSEMBLE_MEMBERS, rank_aggregate
from zico_fast.proxies.ensemble import greedy_members, members_for
from zico_fast.proxies.evaluation import ranking_quality
from zico_fast.proxies.split import split_of
from zico_fast.spaces import get_space
from zico_fast.truth import BUNDLED_TABLES, load_truth

DATA = Path(__file__).resolve().parents[2] / "zico_fast" / "data"
NB201_CHOSEN = "ensemble (NB201-chosen, unchanged)"
SPACE_DEFAULT = "ensemble (space default)"
FIT_CHOSEN = "ensemble (chosen on this fit half)"


@dataclass
class Run:
    source: str
    space: str
    table: str  # the truth table's file name
    truth_column: str
    planned: int  # rows the run's settings name
    logged: int  # rows logged so far (failures included)
    proxies: tuple[str, ...]  # the proxies every kept row carries, in ALL's order
    rows: list[dict]  # {"arch_index", "key" (the split key), "truth", "values": {proxy: float}}

    @property
    def partial(self) -> bool:
        return self.logged < self.planned


def _truth_table(space: str, sha256: str, column: str):
    """The bundled table the run read; else the space's only bundled table (rows then checked)."""
    files = [DATA / name for table_space, name in BUNDLED_TABLES.values() if table_space == space]
    for path in files:
        if hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return load_truth(path, get_space(space), column), False
    if len(files) == 1:
        return load_truth(files[0], get_space(space), column), True
    raise SystemExit(f"no bundled {space} table has sha256 {sha256}; which one did the run read?")


def load_run(path: str | Path) -> Run:
    """The first-repeat, successfully scored rows of a correlate run, joined with their truth."""
    path = Path(path)
    log = path / "scores.jsonl" if path.is_dir() else path
    lines = log.read_text().splitlines()
    settings = json.loads(lines[0])["settings"]
    space_name = settings["space"]["name"]
    table, changed = _truth_table(space_name, settings["truth"]["sha256"], settings["truth"]["column"])
    truth = {r.arch_index: r for r in table.rows}
    space = get_space(space_name)
    first_index: dict[str, int] = {}  # network key -> the arch_index of its first row
    rows, logged = [], set()
    for number, line in enumerate(lines[1:], start=2):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a running log
        if rec.get("repeat", 0) != 0:
            continue
        index = int(rec["arch_index"])
        logged.add(index)
        if rec.get("score") is None:
            continue  # a failed network: no values to rank
        if changed and truth[index].arch != rec["arch"]:
            raise SystemExit(f"{log}:{number}: arch_index {index} is {rec['arch']} in the log but "
                             f"{truth[index].arch} in {table.path.name}")
        key = first_index.setdefault(space.key(rec["arch"]), index)
        values = {k: math.nan if v is None else float(v) for k, v in rec["values"].items()}
        rows.append({"arch_index": index, "key": key, "truth": truth[index].truth, "values": values})
    proxies = tuple(p for p in ALL if rows and all(p in r["values"] for r in rows))
    return Run(str(path), space_name, table.path.name, table.column, settings["rows"], len(logged), proxies, rows)


def halves(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(fit, report): each row's half from its key alone."""
    fit = [r for r in rows if split_of(r["key"]) == "fit"]
    return fit, [r for r in rows if split_of(r["key"]) == "report"]


def _columns(rows: list[dict], proxies) -> dict[str, list[float]]:
    return {p: [r["values"][p] for r in rows] for p in proxies}


def choose_members(fit: list[dict], proxies) -> list[tuple[tuple[str, ...], float]]:
    """The greedy path on the fit rows alone: [(members, fit-half Kendall tau), ...]; the last is the choice."""
    return greedy_members(_columns(fit, proxies), [r["truth"] for r in fit], list(proxies))


def measure(run: Run) -> dict:
    """The per-space result: halves' sizes, the fit-half choice and every report-half figure."""
    fit, report = halves(run.rows)
    out = {"source": run.source, "space": run.space, "truth_column": run.truth_column, "partial": run.partial,
           "logged": run.logged, "planned": run.planned, "n_fit": len(fit), "n_report": len(report),
           "proxies": list(run.proxies), "path": [], "report": {}}
    if len(fit) < 3 or len(report) < 3 or not run.proxies:
        return out
    path = choose_members(fit, run.proxies)
    out["path"] = [{"members": list(m), "fit_kendall_tau": t} for m, t in path]
    cols, truth = _columns(report, run.proxies), [r["truth"] for r in report]
    table = {p: ranking_quality(cols[p], truth) for p in run.proxies}
    ensembles = {NB201_CHOSEN: ENSEMBLE_MEMBERS, SPACE_DEFAULT: members_for(run.space), FIT_CHOSEN: path[-1][0]}
    for name, members in ensembles.items():
        if name == SPACE_DEFAULT and members == ENSEMBLE_MEMBERS:
            continue  # the NB201-chosen row already is this space's default
        if set(members) <= set(run.proxies):
            table[name] = {**ranking_quality(rank_aggregate(cols, members), truth), "members": list(members)}
    out["report"] = table
    best = max(run.proxies, key=lambda p: table[p]["kendall_tau"])
    out["best_single"] = {"proxy": best, "kendall_tau": table[best]["kendall_tau"]}
    return out


def markdown(result: dict) -> str:
    status = f"partial: {result['logged']} of {result['planned']} rows logged" if result["partial"] else \
        f"all {result['planned']} rows"
    lines = [f"# Ensemble per space: {result['space']}, {result['truth_column']}", "",
             f"Source `{result['source']}` ({status}); fit half {result['n_fit']} rows, report half "
             f"{result['n_report']} rows (split_of of the row key, fixed before any score was read).", ""]
    if not result["report"]:
        return "\n".join(lines + ["Too few rows or no proxies: nothing measured.", ""])
    lines += ["Greedy path on the fit half only:", ""]
    lines += [f"- {', '.join(step['members'])}: fit Kendall {step['fit_kendall_tau']:.3f}" for step in result["path"]]
    lines += ["", "Report half (held out):", "", "| proxy | Kendall tau | Spearman | top-10% hit | nDCG@10% |",
              "|---|---|---|---|---|"]
    for name, q in sorted(result["report"].items(), key=lambda kv: -kv[1]["kendall_tau"]):
        label = f"{name}: {', '.join(q['members'])}" if "members" in q else name
        lines.append(f"| {label} | {q['kendall_tau']:.3f} | {q['spearman']:.3f} | {q['top10_hit']:.2f} | "
                     f"{q['ndcg10']:.3f} |")
    best, report = result["best_single"], result["report"]
    margins = [f"{name} {report[name]['kendall_tau'] - best['kendall_tau']:+.3f}"
               for name in (NB201_CHOSEN, SPACE_DEFAULT, FIT_CHOSEN) if name in report]
    lines += ["", f"Best single proxy on the report half: {best['proxy']} ({best['kendall_tau']:.3f}). "
              f"Ensemble minus it (Kendall): {'; '.join(margins)}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a correlate run's folder or scores.jsonl")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    text = markdown(measure(load_run(args.run)))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
