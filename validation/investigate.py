"""Sensitivity of ZiCo's ranking on NB201 / CIFAR-10 to the protocol's choices, on a subset.

For each architecture of a sample of validation/../shared/data/nb201_dev.csv and each *protocol*
(BN mode, input normalisation, batch size, number of batches, initialisation), this collects the
per-batch weight gradients of every Conv2d/Linear with plain PyTorch and evaluates several *formulas*
on the same gradients in float64:

  zico      the authors' code: mean_n|g| / std_n(g), population std (ddof=0) of the signed gradient
  ddof1     the same with the sample std (ddof=1)
  std_abs   the paper's written formula: std of |g| instead of std of g (ddof=0)

Elements whose float32 std is exactly 0 are dropped and empty layers contribute nothing, as in the
authors' code.  Every network is initialised from torch.manual_seed(arch_seed(0, arch_index)), the
seed of the main run, so the `base` protocol reproduces validation/nb201_cifar10's scores.

Results are appended to OUT/records.jsonl (resumable) and summarised in OUT/summary.json / .md.
Run: .venv/bin/python validation/investigate.py [--sample 150] [--protocols base,bn_eval,...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


HERE = Path(__file__).resolve().parent
TRUTH = HERE.parents[1] / "shared/data/nb201_dev.csv"

PROTOCOLS = {
    # name: (bn_mode, normalise, batch_size, num_batches, init, init_seed, data_seed)
    "base": ("train", True, 128, 2, "default", 0, 0),
    "bn_eval": ("eval", True, 128, 2, "default", 0, 0),
    "raw01": ("train", False, 128, 2, "default", 0, 0),
    "bs64": ("train", True, 64, 2, "default", 0, 0),
    "bs256": ("train", True, 256, 2, "default", 0, 0),
    "n4": ("train", True, 128, 4, "default", 0, 0),
    "init_seed1": ("train", True, 128, 2, "default", 1, 0),
    "kaiming": ("train", True, 128, 2, "kaiming", 0, 0),
}
FORMULAS = ("zico", "ddof1", "std_abs")

_STATE: dict = {}


def _batches(normalise: bool, batch_size: int, num_batches: int, data_seed: int):
    import torch

    from zico_fast.data import CIFAR_MEAN, CIFAR_STD, make_batches

    key = (normalise, batch_size, num_batches, data_seed)
    if key not in _STATE:
        batches = make_batches(None, batch_size, num_batches, data_seed)
        if not normalise:  # undo make_batches' normalisation: plain [0, 1] pixels
            mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
            batches = [(x * std + mean, y) for x, y in batches]
        _STATE[key] = batches
    return _STATE[key]


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def gradient_stacks(model, batches, bn_mode: str) -> dict:
    """Layer name -> float32 tensor [N, numel] of the weight gradient of each batch."""
    import torch.nn.functional as F
    from torch import nn

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.train(bn_mode == "train")
    grads = {n: [] for n, _ in layers}
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, m in layers:
            if m.weight.grad is not None:
                grads[n].append(m.weight.grad.detach().reshape(-1).clone())
    import torch

    return {n: torch.stack(g) for n, g in grads.items() if len(g) == len(batches)}


def formulas(stacks: dict) -> dict:
    import torch

    out = {}
    for kind in FORMULAS:
        total = 0.0
        for g32 in stacks.values():
            keep = g32.std(0, correction=0) != 0  # numpy's float32 drop rule
            g = g32.double()[:, keep]
            if g.shape[1] == 0:
                continue
            mean_abs = g.abs().mean(0)
            if kind == "std_abs":
                std = g.abs().std(0, correction=0)
                ok = std > 0  # |g| can be constant where g is not (sign flips)
                mean_abs, std = mean_abs[ok], std[ok]
            else:
                std = g.std(0, correction=1 if kind == "ddof1" else 0)
            s = float((mean_abs / std).sum())
            if s > 0:
                total += math.log(s)
        out[kind] = total
    out["layers"] = len(stacks)
    return out


def score_task(task):
    import torch
    from torch import nn

    from zico_fast.correlate import arch_seed
    from zico_fast.spaces.nb201 import NB201Space

    index, arch, protocol = task
    bn_mode, normalise, bs, nb, init, init_seed, data_seed = PROTOCOLS[protocol]
    start = time.perf_counter()
    torch.manual_seed(arch_seed(init_seed, index))
    model = NB201Space().build(arch)
    if init == "kaiming":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    stacks = gradient_stacks(model, _batches(normalise, bs, nb, data_seed), bn_mode)
    return {"arch_index": index, "protocol": protocol, **formulas(stacks),
            "seconds": round(time.perf_counter() - start, 3), "threads": torch.get_num_threads()}


def summarise(out: Path, rows, records, main_scores) -> dict:
    from zico_fast.correlate import rank_correlations
    from zico_fast.spaces.nb201 import NB201Space

    space = NB201Space()
    acc = [r.truth for r in rows]
    result = {"n": len(rows), "truth": "cifar10_test_acc",
              "params": rank_correlations([space.cost(r.arch).params for r in rows], acc),
              "flops": rank_correlations([space.cost(r.arch).flops for r in rows], acc)}
    for column in ("naslib_nwot", "naslib_synflow"):
        result[column] = rank_correlations([r.compare[column] for r in rows], acc)
    if main_scores:
        z = [main_scores.get(r.arch_index, math.nan) for r in rows]
        result["main_run_zico"] = rank_correlations(z, acc)
    table = {}
    for protocol in PROTOCOLS:
        for kind in FORMULAS:
            values = [records.get((r.arch_index, protocol), {}).get(kind, math.nan) for r in rows]
            if all(math.isnan(v) for v in values):
                continue
            c = rank_correlations(values, acc)
            base = [records.get((r.arch_index, "base"), {}).get("zico", math.nan) for r in rows]
            table[f"{protocol}/{kind}"] = {**c, "tau_vs_base_scores": rank_correlations(values, base)["kendall_tau"]}
    result["variants"] = table
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# ZiCo protocol sensitivity, NB201 CIFAR-10, N = {len(rows)} architectures", "",
             "| protocol / formula | Kendall tau | Spearman | n | tau with base scores |", "|---|---|---|---|---|"]
    for name, c in table.items():
        lines.append(f"| {name} | {c['kendall_tau']:.3f} | {c['spearman']:.3f} | {c['n']} | {c['tau_vs_base_scores']:.3f} |")
    for name in ("params", "flops", "naslib_nwot", "naslib_synflow", "main_run_zico"):
        if name in result:
            c = result[name]
            lines.append(f"| {name} | {c['kendall_tau']:.3f} | {c['spearman']:.3f} | {c['n']} | |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return result


def main() -> int:
    from zico_fast.correlate import load_truth, sample_rows
    from zico_fast.spaces.nb201 import NB201Space

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "nb201_investigation"))
    args = p.parse_args()
    protocols = [x for x in args.protocols.split(",") if x]
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        p.error(f"unknown protocols {sorted(unknown)}; choose from {list(PROTOCOLS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = sample_rows(load_truth(TRUTH, NB201Space()).rows, args.sample, args.seed)
    log = out / "records.jsonl"
    records = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a truncated last line
            records[(r["arch_index"], r["protocol"])] = r
    todo = [(r.arch_index, r.arch, pr) for pr in protocols for r in rows if (r.arch_index, pr) not in records]
    print(f"{len(todo)} to score ({len(records)} done)", file=sys.stderr, flush=True)
    main_scores = {}
    main_log = HERE / "nb201_cifar10" / "scores.jsonl"
    if main_log.exists():
        for line in main_log.read_text().splitlines()[1:]:
            try:
                r = json.loads(line)
                main_scores[r["arch_index"]] = r["zico"] if r["zico"] is not None else math.nan
            except ValueError:
                pass
    import multiprocessing

    with open(log, "a") as f, ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_init, initargs=(1,)) as pool:
        futures = [pool.submit(score_task, t) for t in todo]
        for done, future in enumerate(as_completed(futures), 1):
            r = future.result()
            records[(r["arch_index"], r["protocol"])] = r
            f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if done % 25 == 0:
                print(f"{done}/{len(todo)}", file=sys.stderr, flush=True)
    result = summarise(out, rows, records, main_scores)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
