"""Proxies and the ensemble on the fixed fit / report halves of the NB201 dev rows.

Reads a run's scores.jsonl (records holding an architecture index and proxy values; a run still in
progress is fine), and writes split_report.json and split_report.md in validation/results/nb201_proxies/:
- every proxy's Kendall tau / Spearman / top-10% hit / nDCG@10% on the report half, the fit half and
  all rows (each population ranked within itself);
- the ensemble with the frozen members (zico_fast.proxies.ENSEMBLE_MEMBERS, chosen on fit rows
  only) and AZ-NAS's own four members, for comparison;
- per-architecture Spearman agreement of our proxies with NASLib's columns of the same networks.

usage: python validation/scripts/nb201_proxy_split.py validation/results/nb201_cifar10/scores.jsonl
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from scipy.stats import spearmanr

from zico_fast.proxies import ALL, ENSEMBLE_MEMBERS, rank_aggregate
from zico_fast.proxies.evaluation import ranking_quality
from zico_fast.proxies.split import split_of

HERE = Path(__file__).resolve().parents[1] / "results" / "nb201_proxies"  # outputs
TRUTH = Path(__file__).resolve().parents[2] / "zico_fast" / "data" / "nb201_dev.csv"
AZ_NAS_MEMBERS = ("expressivity", "progressivity", "trainability", "flops")
NASLIB_PAIRS = {"naswot": "naslib_nwot", "snip": "naslib_snip", "grad_norm": "naslib_grad_norm",
                "params": "naslib_params", "flops": "naslib_flops"}


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a running log
        values = rec.get("values", rec)
        index = rec.get("arch_index", rec.get("index"))
        if index is None or not isinstance(values, dict) or rec.get("score", values.get("zico")) is None:
            continue  # the header, or a failed candidate
        out.append({"arch_index": int(index), **{k: values.get(k) for k in ALL if k in values}})
    return out


def _float(v) -> float:
    return math.nan if v in (None, "") else float(v)


def main(path: str) -> None:
    truth_rows = {int(r["arch_index"]): r for r in csv.DictReader(open(TRUTH))}
    records = _records(Path(path))
    names = [n for n in ALL if all(n in r for r in records)]
    report: dict = {"source": path, "members": list(ENSEMBLE_MEMBERS), "halves": {}}
    for half in ("report", "fit", "all"):
        rows = [r for r in records if half == "all" or split_of(r["arch_index"]) == half]
        if len(rows) < 3:
            continue
        truth = [float(truth_rows[r["arch_index"]]["cifar10_test_acc"]) for r in rows]
        cols = {n: [_float(r[n]) for r in rows] for n in names}
        table = {n: ranking_quality(cols[n], truth) for n in names}
        if all(m in cols for m in ENSEMBLE_MEMBERS):
            table["ensemble"] = ranking_quality(rank_aggregate(cols, ENSEMBLE_MEMBERS), truth)
        if all(m in cols for m in AZ_NAS_MEMBERS):
            table["az_nas_4 (AZ-NAS's members, for comparison)"] = ranking_quality(rank_aggregate(cols, AZ_NAS_MEMBERS), truth)
        report["halves"][half] = table
    agreement = {}
    for mine, theirs in NASLIB_PAIRS.items():
        if mine in names:
            a = [_float(r[mine]) for r in records]
            b = [_float(truth_rows[r["arch_index"]][theirs]) for r in records]
            agreement[f"{mine} vs {theirs}"] = float(spearmanr(a, b, nan_policy="omit").statistic)
    report["naslib_agreement_spearman"] = agreement
    (HERE / "split_report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"Source: `{path}`; ensemble members {', '.join(ENSEMBLE_MEMBERS)} (chosen on fit rows only).", ""]
    for half, table in report["halves"].items():
        n = next(iter(table.values()))["n"]
        lines += [f"### {half} half ({n} rows)" if half != "all" else f"### all scored rows ({n}, fit + report: reference only)",
                  "", "| proxy | Kendall tau | Spearman | top-10% hit | nDCG@10% |", "|---|---|---|---|---|"]
        for name, q in sorted(table.items(), key=lambda kv: -kv[1]["kendall_tau"]):
            lines.append(f"| {name} | {q['kendall_tau']:.3f} | {q['spearman']:.3f} | {q['top10_hit']:.2f} | {q['ndcg10']:.3f} |")
        lines.append("")
    lines += ["### Agreement with NASLib's columns (per-architecture Spearman over all scored rows)", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in agreement.items()]
    (HERE / "split_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: nb201_proxy_split.py <scores.jsonl>")
    main(sys.argv[1])
