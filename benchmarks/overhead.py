"""Host overhead per candidate: scoring time minus the bare forward/backward passes it needs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overhead.py [--rounds 200] [--batch 2] [--size 8]

Same model, same batches, every runner timed once per round in a shuffled order (interleaved),
so a busy machine slows all of them alike. Reported: the median of per-round differences
against the bare passes, with both this thread's CPU time (robust to other processes taking the
core) and wall time. Runners:
  bare                     train(), per batch zero_grad + forward + cross-entropy + backward
  bare_minimal             forward + cross-entropy + backward only (grads cleared from a list,
                           no module walks): the floor, against which the scorer's own cost shows
  kernel_arithmetic        only the fused N = 2 op on this model's gradients (host arithmetic on a CPU)
  zico_score(restore=...)  zico_fast's scorer (fused kernels, cached model plan)
  reference                the same statistics with plain torch ops (zico_fast.reference)
  authors                  the authors' loop: per-layer .cpu().numpy() copies, numpy at the end
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import zico_fast  # noqa: E402
from zico_fast.reference import authors_zico_score, zico_score_reference  # noqa: E402
from zico_fast import _ops  # noqa: E402
from zico_fast.spaces.nb201 import NB201Space  # noqa: E402
from workloads import bare_passes  # noqa: E402
from zico_fast.stats import NO_BAD_BATCH  # noqa: E402

# 53 scored layers: stem, 3 conv edges in each of 15 cells, 2 reduction blocks (3 convs each), classifier.
NB201_53 = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"


def bare_minimal(model, batches):
    """The passes alone: no module walks (train mode already set, grads cleared from a list)."""
    params = bare_minimal.params.get(id(model)) or bare_minimal.params.setdefault(id(model), list(model.parameters()))
    for x, y in batches:
        for p in params:
            p.grad = None
        F.cross_entropy(model(x), y).backward()
    for p in params:
        p.grad = None


bare_minimal.params = {}


def kernel_arithmetic(model, batches):
    """Just the fused N = 2 op on this model's real gradients (kept from one earlier run): the
    statistics' arithmetic, which on a CPU runs on the host. Scorer minus bare minus this is the
    bookkeeping around the kernels."""
    if id(model) not in kernel_arithmetic.inputs:
        weights = [layer.weight for layer in zico_fast.select_layers(model)[0]]
        grads = []
        for x, y in batches[:2]:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            grads.append([w.grad for w in weights])
        model.zero_grad(set_to_none=True)
        flags = [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32) for _ in weights]
        kernel_arithmetic.inputs[id(model)] = (grads, flags)
    grads, flags = kernel_arithmetic.inputs[id(model)]
    _ops.pair_ratio_sums(grads[0], grads[1], flags, 1).tolist()


kernel_arithmetic.inputs = {}

RUNNERS = {
    "bare": bare_passes,
    "bare_minimal": bare_minimal,
    "kernel_arithmetic": kernel_arithmetic,
    "zico_score(restore=False)": lambda m, b: zico_fast.zico_score(m, b, restore=False),
    "zico_score(restore=True)": lambda m, b: zico_fast.zico_score(m, b),
    "reference": zico_score_reference,
    "authors": authors_zico_score,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2, help="samples per batch (default 2: tiny)")
    parser.add_argument("--size", type=int, default=8, help="image side in pixels (default 8: tiny)")
    parser.add_argument("--batches", type=int, default=2, help="batches per candidate (default 2)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = NB201Space().build(NB201_53)
    num_layers = len(zico_fast.select_layers(model)[0])
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=gen), torch.randint(0, 10, (args.batch,), generator=gen))
               for _ in range(args.batches)]
    cpu = {name: [] for name in RUNNERS}
    wall = {name: [] for name in RUNNERS}
    order = list(RUNNERS)
    shuffle = random.Random(0)
    for round_index in range(args.rounds + 5):  # 5 warm-up rounds, discarded
        shuffle.shuffle(order)
        for name in order:
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            RUNNERS[name](model, batches)
            c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
            if round_index >= 5:
                cpu[name].append((c1 - c0) / 1e6)
                wall[name].append((w1 - w0) / 1e6)

    print(f"NB201 network, {num_layers} scored layers, {args.batches} batches of {args.batch}x3x{args.size}x{args.size}, "
          f"CPU, {torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds; torch {torch.__version__}")
    for base in ("bare", "bare_minimal"):
        print(f"\noverhead = runner - {base} (median of per-round differences)")
        print(f"{'runner':28s} {'cpu ms':>9s} {'wall ms':>9s} {'overhead cpu ms':>16s} {'wall ms':>9s} "
              f"{'us/layer/batch':>15s} {'x base':>7s}")
        for name in RUNNERS:
            over_cpu = statistics.median(c - b for c, b in zip(cpu[name], cpu[base]))
            over_wall = statistics.median(w - b for w, b in zip(wall[name], wall[base]))
            per_layer = over_cpu * 1e3 / (num_layers * args.batches)
            ratio = statistics.median(cpu[name]) / statistics.median(cpu[base])
            print(f"{name:28s} {statistics.median(cpu[name]):9.3f} {statistics.median(wall[name]):9.3f} "
                  f"{over_cpu:16.3f} {over_wall:9.3f} {per_layer:15.2f} {ratio:7.3f}")
    kernel = statistics.median(cpu["kernel_arithmetic"])
    print(f"\nhost bookkeeping = zico_score - bare_minimal - kernel_arithmetic ({kernel:.3f} ms), cpu time:")
    for name in ("zico_score(restore=False)", "zico_score(restore=True)"):
        book = statistics.median(c - b for c, b in zip(cpu[name], cpu["bare_minimal"])) - kernel
        print(f"  {name:28s} {book:7.3f} ms = {book * 1e3 / (num_layers * args.batches):6.2f} us per scored layer per batch")
    fast = statistics.median(cpu["zico_score(restore=True)"])
    print(f"authors / zico_score(restore=True): {statistics.median(cpu['authors']) / fast:.3f}x;  "
          f"reference / zico_score(restore=True): {statistics.median(cpu['reference']) / fast:.3f}x (cpu time)")


if __name__ == "__main__":
    main()
