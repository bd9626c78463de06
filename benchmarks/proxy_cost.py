"""Per-candidate cost of the proxy sets against ZiCo alone, side by side in one run.

NB201 at the paper's settings (2 batches of 128 real CIFAR-10 images at 32px, default init).
Every round scores each architecture once with every set, in a rotating order (interleaved, so
load changes on a shared machine hit all sets alike); the table gives per-candidate medians and the
ratio to `zico_score` alone.

usage: python benchmarks/proxy_cost.py [--archs 4] [--rounds 3] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import zico_fast
from zico_fast.data import make_batches
from zico_fast.proxies import compute
from zico_fast.spaces import get_space

SETS = {
    "zico_score alone": None,
    "compute('zico')": ("zico",),
    "+ params, flops, grad_norm, snip, gsnr, zico_bc": ("zico", "params", "flops", "grad_norm", "snip", "gsnr", "zico_bc"),
    "+ naswot": ("zico", "naswot"),
    "+ expressivity, progressivity": ("zico", "expressivity", "progressivity"),
    "+ trainability": ("zico", "trainability"),
    "all (every proxy; the ensemble's inputs)": "all",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=4, help="NB201 architectures (fixed benchmark indices)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = get_space("nb201")
    batches = make_batches(batch_size=128, num_batches=2, seed=0, device=args.device)
    # spread over the space: indices 0, 3906, 7812, ... (deterministic, no choice made on results)
    archs = [space.arch_from_index(i * (15625 // args.archs)) for i in range(args.archs)]
    times: dict[str, list[float]] = {name: [] for name in SETS}
    labels = list(SETS)
    for r in range(args.rounds):
        for a, arch in enumerate(archs):
            order = labels[(r + a) % len(labels):] + labels[:(r + a) % len(labels)]
            for label in order:
                torch.manual_seed(a)
                model = space.build(arch).to(args.device)
                start = time.perf_counter()
                if SETS[label] is None:
                    zico_fast.zico_score(model, batches, restore=False)
                else:
                    compute(model, batches, SETS[label], cost=space.cost(arch), restore=False, nonfinite="nan")
                if args.device != "cpu":
                    torch.cuda.synchronize()
                times[label].append(time.perf_counter() - start)
    base = statistics.median(times[labels[0]])
    print(f"NB201, 2 x 128 at 32px, {args.archs} archs x {args.rounds} rounds, device {args.device}, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print(f"{'proxy set':<48} {'median s/candidate':>18} {'x ZiCo alone':>13}")
    for label in labels:
        med = statistics.median(times[label])
        print(f"{label:<48} {med:>18.3f} {med / base:>13.2f}")


if __name__ == "__main__":
    main()
