"""Search-loop overhead per candidate: everything a search does for a candidate except its passes.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/search_overhead.py [--rounds 30] [--paper-rounds 5]

Each round proposes a new NB201 candidate and times, in a shuffled (interleaved) order, every stage
the run engine performs for it, once each; medians over rounds of this thread's CPU time and of
wall time are reported. Stages:
  propose        space.mutate(parent, rng, 2) + canonical (the warm evolution step)
  budget         space.within_budget + space.cost
  seed           the seed rule's init_seed(seed, key) and the fork_rng/manual_seed around a build
  build (old)    NB201Network(ops) with nn.Module constructors (the builder before fast_build)
  build (new)    space.build(arch): prototype clone + one init pass, split below into
    clone          the module tree (no tensors)
    materialize    new tensors + PyTorch's default init (same draws as the constructors)
      rng floor    uniform_ over one flat tensor with the network's parameter count: the random
                   numbers alone, which no builder that draws them on the CPU can avoid
  log append     RunLog.append of a search record (json line, flush, fsync) to a temp file
against the candidate's forward/backward passes: bare train()/zero_grad/forward/cross-entropy/
backward per batch, on a fixed 53-layer NB201 network, at tiny inputs (2 batches of 2x3x8x8) and
at the paper's setting (2 batches of 128x3x32x32, fewer rounds: it takes seconds per round here).
With --device cuda the old builder is the constructors on the CPU then .to(device), the new one builds
on the device, the passes run there, every stage ends with a synchronize, and "device rng" shows what
drawing the numbers on the device would cost instead.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zico_fast.engine.run_log import RunLog
from zico_fast.engine.seeding import init_seed
from zico_fast.spaces import nb201
from zico_fast.spaces.fast_build import clone, materialize

NB201_53 = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
SEED = 0


def passes(model, batches):
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def seeded(fn):
    """fn() under the seed rule's RNG handling (fork_rng + manual_seed), as build_seeded does."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        return fn()


def stages(space, log, state, device):
    """{stage: callable} for this round's candidate; `state` carries the round's arch between stages."""
    arch, ops = state["arch"], nb201._parse(state["arch"])
    proto, widths, op_protos = nb201._prototypes(space.C, space.N, space.num_classes)

    def clone_tree():
        recipes = {}
        net = clone(proto, recipes)
        for i, width in widths.items():
            net.cells[i].edges._modules = {str(e): clone(op_protos[(o, width)], recipes) for e, o in enumerate(ops)}
        state["tree"] = (net, recipes)

    def record():
        cost = space.cost(arch)
        log.append({"id": state["round"], "arch": arch, "score": 1.0, "values": {"zico": 1.0}, "error": None,
                    "seconds": 0.1, "init_seed": init_seed(SEED, arch), "cached_from": None, "flops": cost.flops,
                    "params": cost.params, "depth": cost.depth, "discarded": 0})

    return {
        "propose": lambda: space.canonical(space.mutate(state["parent"], state["rng"], 2)),
        "budget": lambda: (space.within_budget(arch, 2e8, 2e6), space.cost(arch)),
        "seed": lambda: seeded(lambda: init_seed(SEED, space.key(arch))),
        "build (old)": lambda: seeded(lambda: nb201.NB201Network(ops, space.C, space.N, space.num_classes)
                                      .train().to(device)),
        "build (new)": lambda: seeded(lambda: space.build(arch, device=device)),
        "clone": clone_tree,
        "materialize": lambda: seeded(lambda: materialize(state["tree"][0], device, state["tree"][1])),
        "rng floor": lambda: state["flat"].uniform_(-1, 1),
        "log append": record,
    }


def timed(fn, device):
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.thread_time_ns() - c0) / 1e6, (time.perf_counter_ns() - w0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--paper-rounds", type=int, default=5, help="rounds of the 2x128x32x32 passes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    space, rng = nb201.NB201Space(), random.Random(0)
    gen = torch.Generator().manual_seed(0)

    def make_batches(n, size):
        return [(torch.randn(n, 3, size, size, generator=gen).to(device),
                 torch.randint(0, 10, (n,), generator=gen).to(device)) for _ in range(2)]

    torch.manual_seed(0)
    model = space.build(NB201_53, device=device)
    tiny, paper = make_batches(2, 8), make_batches(128, 32)
    times: dict[str, list[tuple[float, float]]] = {}
    params = []
    with tempfile.TemporaryDirectory() as tmp:
        log = RunLog(Path(tmp) / "log.jsonl", "search")
        log.open({"benchmark": "search_overhead"})
        parent = space.initial(rng)
        for r in range(args.rounds + 3):  # 3 warm-up rounds, discarded
            arch = space.canonical(space.mutate(parent, rng, 2))
            n = space.cost(arch).params
            state = {"arch": arch, "parent": parent, "rng": rng, "round": r, "flat": torch.empty(n)}
            parent, todo = arch, stages(space, log, state, device)
            if device.type != "cpu":
                flat_device = torch.empty(n, device=device)
                todo["device rng"] = lambda: flat_device.uniform_(-1, 1)
            todo["passes tiny"] = lambda: passes(model, tiny)
            if args.paper_rounds and r < args.paper_rounds + 3:
                todo["passes 2x128x32"] = lambda: passes(model, paper)
            order = list(todo)
            rng.shuffle(order)
            if order.index("materialize") < order.index("clone"):  # materialize needs this round's tree
                order.remove("materialize")
                order.insert(order.index("clone") + 1, "materialize")
            for name in order:
                t = timed(todo[name], device)
                if r >= 3:
                    times.setdefault(name, []).append(t)
            if r >= 3:
                params.append(n)
        log.close()

    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"NB201 (C=16, N=5) candidates, {args.rounds} interleaved rounds, {where}, {torch.get_num_threads()} thread; "
          f"torch {torch.__version__}; params per candidate median {statistics.median(params):,.0f} "
          f"(min {min(params):,}, max {max(params):,})")
    print(f"{'stage':22s} {'cpu ms':>9s} {'wall ms':>9s}")
    for name in times:
        print(f"{name:22s} {med[name][0]:9.3f} {med[name][1]:9.3f}")
    loop = ("propose", "budget", "seed", "log append")
    for builder in ("build (old)", "build (new)"):
        total = [sum(med[k][i] for k in loop + (builder,)) for i in (0, 1)]
        paper = (f", {total[0] / med['passes 2x128x32'][0]:.4f}x the paper-setting passes"
                 if "passes 2x128x32" in med else "")
        print(f"search-loop overhead with {builder[7:10]} builder: {total[0]:.3f} ms cpu, {total[1]:.3f} ms wall "
              f"= {total[0] / med['passes tiny'][0]:.2f}x the tiny passes{paper} (cpu)")
    print(f"build old / new: {med['build (old)'][0] / med['build (new)'][0]:.2f}x (cpu), "
          f"{med['build (old)'][1] / med['build (new)'][1]:.2f}x (wall); "
          f"rng floor is {med['rng floor'][0] / med['build (new)'][0]:.0%} of the new build (cpu)")


if __name__ == "__main__":
    main()
