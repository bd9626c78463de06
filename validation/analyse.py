"""Where ZiCo's ranking on NB201 comes from, from the main run's records (validation/nb201_cifar10),
plus one network's per-element ratio tail.  Writes validation/nb201_cifar10/analysis.json.
Run: .venv/bin/python validation/analyse.py"""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from investigate import gradient_stacks  # noqa: E402

from zico_fast.correlate import arch_seed, rank_correlations  # noqa: E402
from zico_fast.data import make_batches  # noqa: E402
from zico_fast.spaces.nb201 import NB201Space  # noqa: E402


def main():
    run = HERE / "nb201_cifar10"
    table = {int(r["arch_index"]): r for r in csv.DictReader(open(run / "scores.csv"))}
    recs = [json.loads(line) for line in open(run / "scores.jsonl").read().splitlines()[1:]]
    acc = np.array([float(table[r["arch_index"]]["cifar10_test_acc"]) for r in recs])
    zico = np.array([r["zico"] for r in recs])
    layers = np.array([r["layers"] for r in recs])
    params = np.array([int(table[r["arch_index"]]["params"]) for r in recs])
    out = {"n": len(recs),
           "scored_layers_vs_acc": rank_correlations(layers, acc),
           "zico_vs_params": rank_correlations(zico, params),
           "zico_per_layer_vs_acc": rank_correlations(zico / np.maximum(layers, 1), acc),
           "distinct_params_values": int(len(set(params))), "distinct_zico_values": int(len(set(zico)))}
    groups = defaultdict(list)
    for z, a, p in zip(zico, acc, params):
        groups[p].append((z, a))
    taus, sizes = [], []
    for members in groups.values():
        if len(members) >= 5:
            c = rank_correlations([m[0] for m in members], [m[1] for m in members])
            if np.isfinite(c["kendall_tau"]):
                taus.append(c["kendall_tau"])
                sizes.append(len(members))
    out["zico_within_equal_params_groups"] = {
        "groups": len(taus), "archs": int(sum(sizes)),
        "size_weighted_mean_kendall_tau": float(np.average(taus, weights=sizes))}
    top = {}
    for k in (10, 50):
        top[f"top{k}_mean_acc"] = {"zico": float(acc[np.argsort(-zico, kind="stable")[:k]].mean()),
                                   "params": float(acc[np.argsort(-params, kind="stable")[:k]].mean())}
    top["best_acc_in_set"] = float(acc.max())
    out["top_k"] = top
    out["zero_score_archs"] = {"count": int((zico == 0).sum()), "their_accuracies": sorted(set(acc[zico == 0].tolist()))}
    # one network's ratio tail (1 intra-op thread, as in the main run)
    torch.set_num_threads(1)
    space, index = NB201Space(), 100
    torch.manual_seed(arch_seed(0, index))
    stacks = gradient_stacks(space.build(space.arch_from_index(index)), make_batches(None, 128, 2, 0), "train")
    shares = []
    for name, g in stacks.items():
        g = g.double()
        ratio = g.abs().mean(0) / g.std(0, correction=0)
        ratio = ratio[torch.isfinite(ratio)]
        shares.append({"layer": name, "elements": int(ratio.numel()), "ratio_sum": float(ratio.sum()),
                       "max_ratio": float(ratio.max()), "max_share": float(ratio.max() / ratio.sum())})
    shares.sort(key=lambda s: -s["max_share"])
    out["ratio_tail_arch_100"] = {"arch": space.arch_from_index(index),
                                  "median_max_share": float(np.median([s["max_share"] for s in shares])),
                                  "layers_where_one_element_is_over_half": sum(s["max_share"] > 0.5 for s in shares),
                                  "layers": len(shares), "top5": shares[:5]}
    # the same networks scored with 2 intra-op threads in one process (nb201_threads2) vs 1 thread
    other = HERE / "nb201_threads2" / "scores.jsonl"
    if other.exists():
        two = {r["arch_index"]: r for r in map(json.loads, other.read_text().splitlines()[1:])}
        one = {r["arch_index"]: r for r in recs}
        keys = sorted(two)
        z1 = np.array([one[k]["zico"] for k in keys])
        z2 = np.array([two[k]["zico"] for k in keys])
        nonzero = z1 != 0
        rel = np.abs(z1 - z2)[nonzero] / np.abs(z1[nonzero])
        acc2 = [float(table[k]["cifar10_test_acc"]) for k in keys]
        out["threads_1_vs_2"] = {
            "n": len(keys), "threads": [sorted({one[k]["threads"] for k in keys}), sorted({two[k]["threads"] for k in keys})],
            "identical_scores": int((z1 == z2).sum()), "zero_scores": int((~nonzero).sum()),
            "abs_diff_median": float(np.median(np.abs(z1 - z2))), "abs_diff_max": float(np.abs(z1 - z2).max()),
            "rel_diff_median": float(np.median(rel)), "rel_diff_max": float(rel.max()),
            "kendall_between": rank_correlations(z1, z2)["kendall_tau"],
            "spearman_between": rank_correlations(z1, z2)["spearman"],
            "vs_acc_1_thread": rank_correlations(z1, acc2), "vs_acc_2_threads": rank_correlations(z2, acc2)}
    (run / "analysis.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
