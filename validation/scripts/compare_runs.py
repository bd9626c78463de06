"""How far two correlate runs of the same rows disagree, proxy by proxy: the largest and median
relative difference of every logged value, matched on arch_index. Used to report what a change of
layout, machine or thread count moved (issue 24: scores move only by rounding).

    python validation/scripts/compare_runs.py OLD/scores.jsonl NEW/scores.jsonl
"""
from __future__ import annotations

import argparse
import math
import statistics

from zico_fast.engine.run_log import read_run_log


def values_by_index(path) -> dict[int, dict]:
    _, records = read_run_log(path)
    return {r["arch_index"]: r.get("values") or {} for r in records}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b)) if (a or b) else 0.0


def compare(old: dict[int, dict], new: dict[int, dict]) -> dict[str, dict]:
    """{proxy: {"n", "max", "median", "max_at", "defined_in_one_only"}} over the rows both runs hold."""
    shared = sorted(set(old) & set(new))
    names = sorted({k for i in shared for k in old[i]} & {k for i in shared for k in new[i]})
    table = {}
    for name in names:
        diffs, one_sided = [], 0
        for i in shared:
            a, b = old[i].get(name), new[i].get(name)
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                one_sided += (a is None) != (b is None)
                continue
            diffs.append((relative(a, b), i))
        if diffs:
            worst = max(diffs)
            table[name] = {"n": len(diffs), "max": worst[0], "max_at": worst[1],
                           "median": statistics.median(d for d, _ in diffs), "defined_in_one_only": one_sided}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    old, new = values_by_index(args.old), values_by_index(args.new)
    print(f"rows: old {len(old)}, new {len(new)}, shared {len(set(old) & set(new))}")
    print("| proxy | n | largest relative difference (arch_index) | median | defined in one run only |")
    print("|---|---|---|---|---|")
    for name, row in compare(old, new).items():
        print(f"| {name} | {row['n']} | {row['max']:.2e} ({row['max_at']}) | {row['median']:.2e} | "
              f"{row['defined_in_one_only']} |")


if __name__ == "__main__":
    main()
