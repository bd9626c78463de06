"""What the exact proxies (issue 23) change on the NB201 dev rows, without re-scoring all 725.

Re-scores, with the current code and the committed run's data, seed and settings, every network
whose expressivity, progressivity, trainability or NASWOT the committed run logged as undefined
(None), plus a seeded sample of the other rows as a control, and compares each proxy with the
committed value. Writes validation/results/nb201_proxies/rescore_subset.jsonl (one record per
network: committed and new values, and the new NaN reasons) and rescore_subset.md (the summary).

usage: python validation/scripts/nb201_proxy_rescore_subset.py [--control 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import random
import time
from pathlib import Path

import torch

from zico_fast.data import make_batches
from zico_fast.engine.evaluate import evaluate
from zico_fast.engine.repro import batch_fingerprint
from zico_fast.engine.seeding import build_seeded
from zico_fast.proxies import ALL
from zico_fast.spaces import get_space

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "validation" / "results" / "nb201_cifar10" / "scores.jsonl"
OUT = ROOT / "validation" / "results" / "nb201_proxies"
WATCHED = ("expressivity", "progressivity", "trainability", "naswot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", type=int, default=20, help="rows sampled (seed 0) among the others")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header, *rows = [json.loads(line) for line in RUN.read_text().splitlines()]
    settings = header["settings"]
    space = get_space("nb201", **settings["space"]["options"])
    batches = make_batches(batch_size=128, num_batches=2, seed=settings["seed"])
    assert batch_fingerprint(batches)["sha256"] == settings["repro"]["batches"]["sha256"], "not the run's data"
    rows = [r for r in rows if r.get("values")]
    undefined = [r for r in rows if any(r["values"].get(n) is None for n in WATCHED)]
    others = [r for r in rows if r not in undefined]
    chosen = undefined + random.Random(0).sample(others, min(args.control, len(others)))
    records = []
    with open(OUT / "rescore_subset.jsonl", "w") as log:
        for row in chosen:
            start = time.perf_counter()
            details: dict = {}
            values = evaluate(build_seeded(space, row["arch"], settings["seed"], "cpu"), batches, ALL,
                              cost=space.cost(row["arch"]), details=details)
            record = {"arch_index": row["arch_index"], "group": "undefined" if row in undefined else "control",
                      "committed": row["values"], "new": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
                      "reasons": details.get("reasons", {}), "seconds": round(time.perf_counter() - start, 2)}
            records.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
    summary = summarise(records)
    summary.insert(0, f"{datetime.date.today()}, {platform.machine()} CPU, torch {torch.__version__}, "
                      f"{args.threads} thread(s); `python {Path(__file__).relative_to(ROOT)} --control {args.control}`\n")
    (OUT / "rescore_subset.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))


def summarise(records: list[dict]) -> list[str]:
    lines = ["| proxy | group | rows | committed None | new NaN | None -> finite | largest rel. change of finite values |",
             "|---|---|---|---|---|---|---|"]
    for name in ALL:
        for group in ("undefined", "control"):
            rs = [r for r in records if r["group"] == group]
            before = [r["committed"].get(name) for r in rs]
            after = [r["new"].get(name) for r in rs]
            both = [(a, b) for a, b in zip(before, after) if a is not None and b is not None]
            rel = max((abs(b - a) / max(abs(a), 1e-300) for a, b in both), default=0.0)
            lines.append(f"| {name} | {group} | {len(rs)} | {before.count(None)} | {after.count(None)} | "
                         f"{sum(a is None and b is not None for a, b in zip(before, after))} | {rel:.2e} |")
    reasons: dict[str, int] = {}
    for r in records:
        for name, why in r["reasons"].items():
            reasons[f"{name}: {why}"] = reasons.get(f"{name}: {why}", 0) + 1
    lines += ["", "NaN reasons now (rows):", ""] + [f"- {k} ({v})" for k, v in sorted(reasons.items())]
    return lines


if __name__ == "__main__":
    main()
