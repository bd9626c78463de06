"""The README's cross-benchmark table (issue 26), regenerated from the committed correlate runs.

Rows: every proxy, the NB201-chosen ensemble unchanged, the space's default members where they differ,
the members chosen on that column's fit half, and each ensemble's margin over the best single proxy.
Columns: NB201 C10, NB201 C100, NB101 (the uniform sample when its run is committed, else NASLib's
300-row sample, labelled), NB301. A cell is Kendall tau / Spearman rho on the column's report half
(nothing is fitted on it; halves as in ensemble_per_space.py), with n. A column with no committed run
says "not run"; a proxy the run did not compute, "not computed". A run still short of its rows is
never reported (its column says so); --allow-partial measures it anyway, to check a live run, and
cannot be combined with --readme.

usage: python validation/scripts/cross_benchmark_table.py [--readme] [--allow-partial] [COLUMN=RUN ...]
  --readme       replace the table between the README's cross-benchmark markers (nothing else)
  COLUMN=RUN     read that column from another run, e.g. "NB201 C10=runs/val_c10"
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ensemble_per_space import FIT_CHOSEN, NB201_CHOSEN, SPACE_DEFAULT, load_run, measure

from zico_fast.proxies import ALL

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "validation/results"
#: Column -> committed runs, the first present is used.
COLUMNS = {"NB201 C10": [f"{RESULTS}/nb201_cifar10"], "NB201 C100": [f"{RESULTS}/nb201_cifar100"],
           "NB101": [f"{RESULTS}/nb101_uniform", f"{RESULTS}/nb101_cifar10"], "NB301": [f"{RESULTS}/nb301_cifar10"]}
SAMPLES = {"nb101_uniform_dev.csv": "uniform sample", "nb101_dev.csv": "NASLib's sample"}
BEGIN = "<!-- cross-benchmark table: begin (python validation/scripts/cross_benchmark_table.py --readme) -->"
END = "<!-- cross-benchmark table: end -->"
ENSEMBLES = (NB201_CHOSEN, SPACE_DEFAULT, FIT_CHOSEN)
MARGINS = {NB201_CHOSEN: "NB201-chosen minus best single proxy (Kendall)",
           SPACE_DEFAULT: "space default minus best single proxy (Kendall)",
           FIT_CHOSEN: "fit-half-chosen minus best single proxy (Kendall)"}


def cell(q: dict) -> str:
    return f"{q['kendall_tau']:.3f} / {q['spearman']:.3f} (n={q['n']}, report)"


@dataclass
class Column:
    header: str
    cells: dict[str, str]  # row -> cell
    missing: str  # what a row without a cell says
    note: str  # where the column comes from, under the table


def column(name: str, runs: list[str], allow_partial: bool) -> Column:
    found = next((r for r in runs if (ROOT / r / "scores.jsonl").exists() or r.endswith(".jsonl")), None)
    if found is None:
        return Column(name, {}, "not run", f"{name}: not run (no committed run in {' or '.join(runs)})")
    run = load_run(ROOT / found)
    header = f"{name} ({SAMPLES[run.table]})" if run.table in SAMPLES else name
    where = f"{header}: `{found}`, {run.space} against `{run.table}` {run.truth_column}"
    if run.partial and not allow_partial:
        return Column(header, {}, "run not finished",
                      f"{where}: {run.logged} of {run.planned} rows logged, not reported until the run finishes")
    if run.partial:
        header += f" PARTIAL {run.logged}/{run.planned}"
    result = measure(run)
    if not result["report"]:
        return Column(header, {}, "too few rows", f"{where}: too few rows to measure")
    cells = {row: cell(q) for row, q in result["report"].items()}
    best = result["best_single"]
    for row, label in MARGINS.items():
        if row in result["report"]:
            cells[label] = f"{result['report'][row]['kendall_tau'] - best['kendall_tau']:+.3f} (vs {best['proxy']})"
    if SPACE_DEFAULT not in cells and NB201_CHOSEN in cells:
        cells[SPACE_DEFAULT] = cells[MARGINS[SPACE_DEFAULT]] = "= NB201-chosen"
    chosen = result["path"][-1]
    return Column(header, cells, "not computed",
                  f"{where}; fit half {result['n_fit']} rows, report half {result['n_report']}; members chosen on "
                  f"the fit half: {', '.join(chosen['members'])} (fit Kendall {chosen['fit_kendall_tau']:.3f})")


def table(columns: dict[str, list[str]], allow_partial: bool = False) -> str:
    parts = [column(name, runs, allow_partial) for name, runs in columns.items()]
    lines = ["| proxy | " + " | ".join(c.header for c in parts) + " |", "|---" * (len(parts) + 1) + "|"]
    for row in (*ALL, *ENSEMBLES, *MARGINS.values()):
        lines.append(f"| {row} | " + " | ".join(c.cells.get(row, c.missing) for c in parts) + " |")
    lines += ["", "Kendall tau / Spearman rho on each column's report half (held out), n rows. A margin is the "
              "ensemble's Kendall minus the best single proxy's on the same rows (that proxy picked on those "
              "rows, which favours it).", ""]
    lines += [f"- {c.note}" for c in parts]
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, body: str) -> str:
    """`text` with the part between BEGIN and END replaced by `body` (everything else unchanged)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"README.md needs exactly one pair of markers:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN)
    return head + BEGIN + "\n" + body + rest[rest.index(END):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--allow-partial", action="store_true", help="measure runs still short of their rows")
    parser.add_argument("runs", nargs="*", metavar="COLUMN=RUN", help="read a column from another run")
    args = parser.parse_args()
    if args.readme and args.allow_partial:
        parser.error("--allow-partial numbers never go into the README")
    columns = dict(COLUMNS)
    for item in args.runs:
        name, _, run = item.partition("=")
        if name not in COLUMNS or not run:
            parser.error(f"{item!r}: expected COLUMN=RUN with COLUMN one of {', '.join(COLUMNS)}")
        columns[name] = [str(Path(run).resolve())]
    body = table(columns, args.allow_partial)
    print(body, end="")
    if args.readme:
        readme = ROOT / "README.md"
        readme.write_text(replace_between_markers(readme.read_text(), body))


if __name__ == "__main__":
    main()
