"""Development run on FIT-half rows only: every proxy on a subset, resumable (appends JSONL).

Used to choose the ensemble members before the full run; never touches report-half rows.
usage: nice python validation/scripts/nb201_fit_subset.py [N]
"""
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from zico_fast.data import make_batches
from zico_fast.proxies import compute
from zico_fast.proxies.split import split_of
from zico_fast.spaces import get_space

HERE = Path(__file__).resolve().parents[1] / "results" / "nb201_proxies"  # outputs
OUT = HERE / "dev_fit_subset.jsonl"
ROWS = Path(__file__).resolve().parents[2] / "zico_fast" / "data" / "nb201_dev.csv"

torch.set_num_threads(1)
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100
rows = [r for r in csv.DictReader(open(ROWS)) if split_of(int(r["arch_index"])) == "fit"]
rows.sort(key=lambda r: hashlib.sha256(r["arch_index"].encode()).hexdigest())  # a fixed shuffle
done = {json.loads(line)["arch_index"] for line in open(OUT)} if OUT.exists() else set()
space, batches = get_space("nb201"), make_batches(batch_size=128, num_batches=2, seed=0)
with open(OUT, "a") as log:
    for row in rows[:limit]:
        index = int(row["arch_index"])
        if index in done:
            continue
        arch = row["arch_string"]
        torch.manual_seed(index)
        model = space.build(arch)
        start = time.perf_counter()
        values = compute(model, batches, "all", cost=space.cost(arch), restore=False, nonfinite="nan")
        log.write(json.dumps({"arch_index": index, "seconds": time.perf_counter() - start, **values}) + "\n")
        log.flush()
