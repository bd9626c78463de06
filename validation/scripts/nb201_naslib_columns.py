"""Regenerates the naslib_* columns of zico_fast/data/nb201_dev.csv from NASLib's zc_nasbench201.json,
reading NASLib's keys in NASLib's edge order, checks the result, and prints the NASLib proxies'
rank correlations with the table's CIFAR-10 test accuracy.

Why: the columns were first joined by reading each key's six op indices in the arch string's edge
order (node1<-0, node2<-0, node2<-1, node3<-0, ...) instead of NASLib's EDGE_LIST order (node1<-0,
node2<-0, node3<-0, node2<-1, node3<-1, node3<-2), so every row held the scores of another cell.
NASLib's file (commit 6639fd15) holds 725 cells, only 169 of them among the table's 725 rows: those
rows get all of NASLib's values; on the others the proxy columns are left empty, and naslib_params
and naslib_flops are NASLib's counts of the cell the row was first joined to, which has the same six
ops on permuted edges (a cell's params and FLOPs do not depend on which edge carries which op;
checked against our builder on every row). Every other column stays byte-identical.

usage: python validation/scripts/nb201_naslib_columns.py ZC_JSON [--check] [--scores SCORES_JSONL] [--nats NATS_CSV]
  ZC_JSON: `git show 6639fd15:naslib/data/zc_nasbench201.json` of automl/NASLib (its git blob id is checked)
  --check: regenerate in memory and fail unless the committed table equals the result (writes nothing)
  --scores: a correlate run log (validation/results/nb201_cifar10/scores.jsonl): our proxies on the same rows
  --nats: v-tao/nats-bench-landscape's nats_bench.csv (all 15,625 cells): the NASLib proxies on NASLib's
          own 725 cells, against the same NATS-Bench test accuracy
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from zico_fast.spaces.nb201 import OPS, NB201Space, _parse
from zico_fast.truth_naslib import NB201_OPS, nb201_arch

TABLE = Path(__file__).resolve().parents[2] / "zico_fast" / "data" / "nb201_dev.csv"
BLOB = "01f0f4ac3ccf98081839c9ec89b0c655fbd8301e"  # naslib/data/zc_nasbench201.json at automl/NASLib 6639fd15
TASK = "cifar10"
PARAMS_AND_FLOPS = ("naslib_params", "naslib_flops")  # invariant under a permutation of the edges
PROXIES = ("nwot", "synflow", "snip", "grad_norm", "jacov", "grasp", "fisher", "params", "flops")
SPACE = NB201Space()


def field(column: str) -> str:
    """The JSON field a naslib_* column holds."""
    return "val_accuracy" if column == "naslib_cifar10_valid_acc" else column[len("naslib_"):]


def text(value) -> str:
    """A JSON value ({score, time} or a number; None where NASLib has none) as the table writes it."""
    value = value["score"] if isinstance(value, dict) else value
    return "" if value is None else repr(float(value))


def load_json(path: Path) -> dict:
    raw = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
    if blob != BLOB:
        sys.exit(f"{path} is git blob {blob}, not NASLib 6639fd15's zc_nasbench201.json ({BLOB})")
    return json.loads(raw)[TASK]


def string_order_key(arch: str) -> str:
    """The NASLib key the table was first joined under: the row's ops listed in the arch string's edge order."""
    return str(tuple(NB201_OPS.index(OPS[o]) for o in _parse(arch)))


def regenerate(lines: list[str], entries: dict) -> tuple[list[str], int]:
    """The table's lines with naslib_* fields rewritten, and how many rows NASLib holds."""
    header = lines[0].split(",")
    columns = [i for i, name in enumerate(header) if name.startswith("naslib_")]
    by_arch = {SPACE.canonical(nb201_arch(key)): entry for key, entry in entries.items()}
    out, held = [lines[0]], 0
    for line in lines[1:]:
        fields = line.split(",")  # no field holds a comma or a quote
        arch = fields[header.index("arch_string")]
        entry = by_arch.get(SPACE.canonical(arch))
        held += entry is not None
        permuted = entries[string_order_key(arch)]  # same ops on permuted edges
        for i in columns:
            if entry is not None:
                fields[i] = text(entry.get(field(header[i])))
            else:
                fields[i] = text(permuted[field(header[i])]) if header[i] in PARAMS_AND_FLOPS else ""
        out.append(",".join(fields))
    return out, held


def check(old: list[str], new: list[str]) -> list[dict]:
    """Fails unless the other columns are unchanged, params/FLOPs are our builder's on every row and
    NASLib's validation accuracy agrees with NATS-Bench's test accuracy (Pearson > 0.98)."""
    header = old[0].split(",")
    keep = [i for i, name in enumerate(header) if not name.startswith("naslib_")]
    assert new[0] == old[0] and len(new) == len(old) == 726, "the header or the row count changed"
    for a, b in zip(old[1:], new[1:]):
        assert [a.split(",")[i] for i in keep] == [b.split(",")[i] for i in keep], f"row changed: {a[:60]}"
    rows = list(csv.DictReader(new))
    for r in rows:
        arch = r["arch_string"]
        assert round(SPACE.cost(arch).params / 1e6, 6) == float(r["naslib_params"]), arch
        assert SPACE.naslib_flops(arch) == round(float(r["naslib_flops"]) * 1e6), arch
    pairs = np.array([(float(r["naslib_cifar10_valid_acc"]), float(r["cifar10_test_acc"]))
                      for r in rows if r["naslib_cifar10_valid_acc"]]).T
    rho = np.corrcoef(pairs)[0, 1]
    print(f"checks passed: other columns unchanged, params and FLOPs = our builder's on all {len(rows)} rows, "
          f"NASLib val acc vs cifar10_test_acc Pearson {rho:.4f} on its {pairs.shape[1]} rows")
    assert rho > 0.98
    return rows


def correlations(columns: dict[str, list[float]], truth: list[float], title: str) -> None:
    print(f"\n{title}\n| proxy | n | Kendall tau | Spearman |\n|---|---|---|---|")
    for name, values in columns.items():
        x, y = np.array(values, float), np.array(truth, float)
        keep = np.isfinite(x)
        tau, rho = kendalltau(x[keep], y[keep])[0], spearmanr(x[keep], y[keep])[0]
        print(f"| {name} | {keep.sum()} | {tau:.3f} | {rho:.3f} |")


def value(text_value: str) -> float:
    return float(text_value) if text_value else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zc_json", type=Path)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--scores", type=Path)
    parser.add_argument("--nats", type=Path)
    args = parser.parse_args()
    entries = load_json(args.zc_json)
    old = TABLE.read_bytes().decode().split("\r\n")[:-1]  # CRLF lines, one at the end
    new, held = regenerate(old, entries)
    rows = check(old, new)
    if args.check:
        if new != old:
            sys.exit(f"{TABLE} differs from the columns regenerated from {args.zc_json}")
        print(f"{TABLE.name} equals the regenerated table")
    elif new != old:
        TABLE.write_bytes(("\r\n".join(new) + "\r\n").encode())
        print(f"wrote {TABLE} ({held} rows with NASLib's values)")
    held_rows = [r for r in rows if r["naslib_cifar10_valid_acc"]]
    truth = [float(r["cifar10_test_acc"]) for r in held_rows]
    correlations({p: [value(r["naslib_" + p]) for r in held_rows] for p in PROXIES}, truth,
                 f"NASLib's proxies vs cifar10_test_acc on the {len(held_rows)} rows NASLib holds")
    if args.scores:
        logged = {}
        for line in args.scores.read_text().splitlines():
            record = json.loads(line)
            if record.get("arch_index") is not None and record.get("error") is None:
                logged[int(record["arch_index"])] = record["values"]
        ours = {name: [logged[int(r["arch_index"])].get(name, math.nan) for r in held_rows]
                for name in ("zico", "naswot", "params")}
        correlations(ours, truth, f"our proxies ({args.scores}) on the same {len(held_rows)} rows")
    if args.nats:
        accuracy = {SPACE.canonical(r["ArchitectureString"]): float(r["CIFAR10TestAccuracy200Epochs"])
                    for r in csv.DictReader(open(args.nats))}
        own = list(entries.values())
        correlations({p: [value(text(e.get(p))) for e in own] for p in PROXIES},
                     [accuracy[SPACE.canonical(nb201_arch(k))] for k in entries],
                     f"NASLib's proxies on NASLib's own {len(own)} cells vs NATS-Bench cifar10 test acc ({args.nats})")


if __name__ == "__main__":
    main()
