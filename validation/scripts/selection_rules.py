"""Which way of choosing ensemble members transfers to unseen rows? Measured inside fit halves only.

Each rule picks members from rows it is shown. Every fit half (RUN ...) is cut many times into two
random parts (seeded; the report half is never read): a rule chooses on one part and is measured by
Kendall tau on the other. For each space, the rule with the best mean over its cuts is applied to
that space's whole fit half (its choice becomes SPACE_MEMBERS), and the report half
(ensemble_per_space.py) then says how it did.

Rules:
- greedy: forward selection from the best single proxy, adding while a member gains 0.005 (greedy_members).
- subsets: the best of every subset of 1..6 proxies (ties: fewer members).
- nb201: the NB201-chosen members, fixed (nothing chosen here; on NB201 columns they were chosen on
  90 of these fit rows, so there the rule is measured in-sample and flattered).
- nb201_flops: the same with FLOPs as the complexity term (AZ-NAS's; on NB201 it ranks as params does).
- az_nas: AZ-NAS's own four, fixed: expressivity, progressivity, trainability and FLOPs.
- best_single: the best single proxy on the part.

usage: python validation/scripts/selection_rules.py RUN [RUN ...] [--cuts 40] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import itertools
import random

import numpy as np
from ensemble_per_space import halves, load_run
from scipy.stats import kendalltau

from zico_fast.proxies.ensemble import ENSEMBLE_MEMBERS, greedy_members, rank_aggregate

#: Left out of the subsets rule: below zero on every fit half measured, and they would quadruple its work.
NEVER = ("grad_norm", "snip")


def _tau(columns: dict, rows: list[int], members, truth) -> float:
    part = {m: [columns[m][i] for i in rows] for m in members}
    return float(kendalltau(rank_aggregate(part, members), [truth[i] for i in rows]).statistic)


def _subsets(proxies, most=6):
    usable = [p for p in proxies if p not in NEVER]
    return [s for k in range(1, most + 1) for s in itertools.combinations(usable, k)]


def choose(rule: str, columns: dict, rows: list[int], truth, proxies) -> tuple[str, ...]:
    """The members `rule` picks from `rows` alone."""
    if rule == "nb201":
        return ENSEMBLE_MEMBERS
    if rule == "nb201_flops":
        return tuple("flops" if m == "params" else m for m in ENSEMBLE_MEMBERS)
    if rule == "az_nas":
        return ("expressivity", "progressivity", "trainability", "flops")
    if rule == "best_single":
        return max(((p,) for p in proxies if p not in NEVER), key=lambda s: _tau(columns, rows, s, truth))
    if rule == "greedy":
        part = {p: [columns[p][i] for i in rows] for p in proxies}
        return greedy_members(part, [truth[i] for i in rows], list(proxies))[-1][0]
    if rule == "subsets":
        scored = [(_tau(columns, rows, s, truth), -len(s), s) for s in _subsets(proxies)]
        return max(scored)[2]
    raise ValueError(rule)


RULES = ("greedy", "subsets", "nb201", "nb201_flops", "az_nas", "best_single")


def study(run_paths, cuts: int, seed: int = 0) -> dict:
    """{run: {rule: [held-out tau per cut]}} over `cuts` random halvings of each run's fit half."""
    out = {}
    for path in run_paths:
        run = load_run(path)
        fit, _ = halves(run.rows)  # the report half is dropped here, unread
        columns = {p: [r["values"][p] for r in fit] for p in run.proxies}
        truth = [r["truth"] for r in fit]
        rng, taus = random.Random(seed), {rule: [] for rule in RULES}
        for _ in range(cuts):
            order = list(range(len(fit)))
            rng.shuffle(order)
            train, test = order[: len(order) // 2], order[len(order) // 2:]
            for rule in RULES:
                members = choose(rule, columns, train, truth, run.proxies)
                taus[rule].append(_tau(columns, test, members, truth))
        out[f"{run.space} {run.truth_column} ({path}, fit half {len(fit)} rows)"] = taus
    return out


def markdown(result: dict, cuts: int) -> str:
    lines = ["# Member-selection rules, measured inside fit halves", "",
             f"Each fit half cut {cuts} times into two random halves (seed 0): a rule chooses on one, Kendall "
             "tau on the other (mean ± standard deviation over cuts). No report-half row is read.", "",
             "| rule | " + " | ".join(result) + " | mean over runs |", "|---" * (len(result) + 2) + "|"]
    for rule in RULES:
        means = [float(np.mean(t[rule])) for t in result.values()]
        cells = [f"{np.mean(t[rule]):.3f} ± {np.std(t[rule]):.3f}" for t in result.values()]
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {np.mean(means):.3f} |")
    lines.append("")
    for run, taus in result.items():
        lines.append(f"- best rule on {run}: **{max(RULES, key=lambda r: np.mean(taus[r]))}**")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--cuts", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    text = markdown(study(args.runs, args.cuts), args.cuts)
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
