"""Search-loop overhead per candidate: everything a search does for a candidate except its passes.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/search_overhead.py [--rounds 40] [--paper-rounds 5]

Part 1, the stages, side by side. Each round draws a uniformly random NB201 candidate and times
every stage once, in a shuffled (interleaved) order; medians over rounds of this thread's CPU time and of wall
time. Stages:
  propose          space.mutate(parent, rng, 2) + canonical (the warm evolution step)
  budget           space.within_budget + space.cost
  seed             the seed rule's init_seed(seed, key)
  build: constructors   NB201Network(ops) under fork_rng/manual_seed (the first builder)
  build: fresh          space.build(arch, seed=s): prototype clone + one native init pass
  build: reused         the worker's reused network (nb201_reuse): swap ops, redraw, join plan
    draws: native       init_weights_ over one flat tensor of the candidate's parameter count
    draws: uniform_     torch's uniform_ over the same count (what the draws cost before)
  log append       RunLog.append of a search record (json line, flush; fsync once a second)
  scorer plan      the scorer's plan of a freshly built network (a reused one comes with its plan)
against the candidate's passes: bare train()/zero_grad/forward/cross-entropy/backward per batch, on
a fixed 53-layer NB201 network, at tiny inputs (2 batches of 2x3x8x8) and at the paper's setting
(2 batches of 128x3x32x32, fewer rounds: it takes seconds per round on a CPU).

Part 2, the same in the real loop, with its attribution: one `search()` (evolution, in-process
backend, the engine's reused network, tiny passes) after a 100-candidate warm-up search on the same
backend (so its reused network has its modules built), whose `evaluate()` takes turns, in blocks of
20 consecutive candidates, between
  passes        the engine's own evaluate (the passes plus the scorer),
  no passes     a stub returning the parameter count (ZiCo tracks it closely, so evolution drifts
                to networks of similar sizes),
  swept         the stub after reading and writing --sweep-mb MiB (the passes' effect on the CPU
                caches, without their work).
A candidate's overhead is this thread's CPU time from the end of the previous evaluate() to the
start of its own: everything the loop does for it (records, population and log of the one before,
proposal, budget, seed, build), counted for the candidates that come third or later in a block (the
two before them took the same turn, so the caches are in that turn's state). Blocks taking turns
keep this VM's drifting speed out of the comparison. The search's set-up is not counted.

With --device cuda the builders build on the device, every stage ends with a synchronize, and
"draws: on device" shows what drawing on the device would cost instead.
"""
from __future__ import annotations

import argparse
import importlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import warnings

import torch
import torch.nn.functional as F

from zico_fast.engine import InProcessBackend
from zico_fast.engine.run_log import RunLog
from zico_fast.engine.seeding import init_seed
from zico_fast.model_state import ModelPlan
from zico_fast._ops import init_weights_
from zico_fast.search import search
from zico_fast.spaces import nb201, nb201_net
from zico_fast.spaces.nb201_reuse import ReusedNB201

NB201_53 = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
SEED = 0
LOOP = ("propose", "budget", "seed", "log append")
TURN_BLOCK = 20  # consecutive candidates per turn in part 2


def passes(model, batches):
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def constructors(space, ops, device):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        return nb201_net.NB201Network(ops, space.C, space.N, space.num_classes).train().to(device)


def stages(space, reused, log, state, device):
    """{stage: callable} for this round's candidate."""
    arch, ops, s = state["arch"], nb201._parse(state["arch"]), state["init_seed"]

    def record():
        cost = space.cost(arch)
        log.append({"id": state["round"], "arch": arch, "score": 1.0, "values": {"zico": 1.0}, "error": None,
                    "seconds": 0.1, "init_seed": s, "cached_from": None, "flops": cost.flops,
                    "params": cost.params, "depth": cost.depth, "discarded": 0})

    return {
        "propose": lambda: space.canonical(space.mutate(state["parent"], state["rng"], 2)),
        "budget": lambda: (space.within_budget(arch, 2e8, 2e6), space.cost(arch)),
        "seed": lambda: init_seed(SEED, space.key(arch)),
        "build: constructors": lambda: constructors(space, ops, device),
        "build: fresh": lambda: state.__setitem__("fresh", space.build(arch, device=device, seed=s)),
        "build: reused": lambda: reused.build(arch, s),
        "draws: native": lambda: init_weights_([state["flat"]], [0.1], [], [], s),
        "draws: uniform_": lambda: state["flat_cpu"].uniform_(-0.1, 0.1),
        "log append": record,
    }


def timed(fn, device):
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.thread_time_ns() - c0) / 1e6, (time.perf_counter_ns() - w0) / 1e6


def stage_medians(args, space, device, tiny, paper, model):
    rng = random.Random(0)
    reused = ReusedNB201(space, device)
    started = time.thread_time_ns()
    reused.warm_up()
    modules = sum(len(row) for row in reused._table.values())
    print(f"reused network: all {modules} cell-edge-op modules built in "
          f"{(time.thread_time_ns() - started) / 1e6:.1f} ms cpu, once per worker")
    times: dict[str, list[tuple[float, float]]] = {}
    params = []
    # The draws write into memory allocated once, as the reused network's weights are (a fresh
    # allocation per round would add its page faults to both draw timings).
    largest = max(space.cost(arch).params for arch in space.enumerate())
    flat, flat_cpu = torch.empty(largest, device=device), torch.empty(largest)
    with tempfile.TemporaryDirectory() as tmp:
        log = RunLog(Path(tmp) / "log.jsonl", "search")
        log.open({"benchmark": "search_overhead"})
        parent = space.initial(rng)
        for r in range(args.rounds + 3):  # 3 warm-up rounds, discarded
            arch = space.random(rng)  # uniform over the space: its parameter counts, not a mutation chain's
            n = space.cost(arch).params
            state = {"arch": arch, "parent": parent, "rng": rng, "round": r, "init_seed": init_seed(SEED, arch),
                     "flat": flat[:n], "flat_cpu": flat_cpu[:n]}
            parent, todo = arch, stages(space, reused, log, state, device)
            if device.type != "cpu":
                todo["draws: on device"] = lambda: state["flat"].uniform_(-0.1, 0.1)
            todo["passes tiny"] = lambda: passes(model, tiny)
            if args.paper_rounds and r < args.paper_rounds + 3:
                todo["passes 2x128x32"] = lambda: passes(model, paper)
            order = list(todo)
            rng.shuffle(order)
            for name in order:
                t = timed(todo[name], device)
                if r >= 3:
                    times.setdefault(name, []).append(t)
            # The plan a fresh network needs before scoring (the reused one comes with its own).
            t = timed(lambda: ModelPlan.build(state["fresh"], None), device)
            if r >= 3:
                times.setdefault("scorer plan (fresh)", []).append(t)
                params.append(n)
        log.close()
    return {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}, params


class WarmInProcessBackend(InProcessBackend):
    """The in-process backend, keeping its worker state (batches, reused network) from one search
    to the next, as one long search would: the measured search starts with its modules built."""

    def start(self, config):
        if getattr(self, "state", None) is None:
            super().start(config)
        self.config = config


def in_search(args, space, device, tiny):
    """{turn: [overhead ms of each candidate after it]}, evaluate() ms per candidate with the passes,
    candidates scored, their median parameter count; see the module's docstring."""
    evaluate_module = importlib.import_module("zico_fast.engine.evaluate")  # the module, not the function
    plain = evaluate_module.evaluate
    sweep = torch.zeros(int(args.sweep_mb * 2**20) // 4)

    def parameter_count(model, batches, proxies=("zico",), *, cost, **_):
        return {"zico": float(cost.params)}

    def swept(model, batches, proxies=("zico",), *, cost, **_):
        sweep.add_(1.0)
        return parameter_count(model, batches, cost=cost)

    turns = (("passes", plain), ("no passes", parameter_count), (f"{args.sweep_mb:g} MiB swept", swept))
    gaps = {name: [] for name, _ in turns}
    inside, params, last_end = [], [], [0]

    def taking_turns(model, *a, **k):
        start = time.thread_time_ns()
        name, evaluate = turns[len(params) // TURN_BLOCK % len(turns)]
        if len(params) % TURN_BLOCK >= 2:
            gaps[name].append((start - last_end[0]) / 1e6)
        params.append(k["cost"].params)
        try:
            return evaluate(model, *a, **k)
        finally:
            last_end[0] = time.thread_time_ns()
            if evaluate is plain:
                inside.append((last_end[0] - start) / 1e6)

    backend = WarmInProcessBackend()
    with tempfile.TemporaryDirectory() as tmp:
        search(space, tiny, iterations=100, log_path=Path(tmp) / "warm.jsonl", population=64, seed=SEED + 1,
               device=str(device), threads=1, backend=backend)
        evaluate_module.evaluate = taking_turns
        try:
            search(space, tiny, iterations=args.search_iterations, log_path=Path(tmp) / "s.jsonl", population=64,
                   seed=SEED, device=str(device), threads=1, backend=backend)
        finally:
            evaluate_module.evaluate = plain
    return gaps, statistics.median(inside), len(params), statistics.median(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--paper-rounds", type=int, default=5, help="rounds of the 2x128x32x32 passes")
    parser.add_argument("--search-iterations", type=int, default=300, help="candidates of the real search (0: skip)")
    parser.add_argument("--sweep-mb", type=float, default=32.0,
                        help="memory the 'swept' turn reads and writes (default: this VM's L3)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # tiny 8x8 inputs make some candidates' ZiCo 0; expected here
    device = torch.device(args.device)
    torch.set_num_threads(1)
    space = nb201.NB201Space()
    gen = torch.Generator().manual_seed(0)

    def make_batches(n, size):
        return [(torch.randn(n, 3, size, size, generator=gen).to(device),
                 torch.randint(0, 10, (n,), generator=gen).to(device)) for _ in range(2)]

    model = space.build(NB201_53, device=device, seed=0)
    tiny, paper = make_batches(2, 8), make_batches(128, 32)
    med, params = stage_medians(args, space, device, tiny, paper, model)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"NB201 (C=16, N=5) candidates, {args.rounds} interleaved rounds, {where}, {torch.get_num_threads()} thread; "
          f"torch {torch.__version__}; params per candidate median {statistics.median(params):,.0f} "
          f"(min {min(params):,}, max {max(params):,})")
    print(f"{'stage':22s} {'cpu ms':>9s} {'wall ms':>9s}")
    for name in sorted(med):
        print(f"{name:22s} {med[name][0]:9.3f} {med[name][1]:9.3f}")
    for builder in ("build: constructors", "build: fresh", "build: reused"):
        total = [sum(med[k][i] for k in LOOP + (builder,)) for i in (0, 1)]
        if builder != "build: reused":  # a fresh network still needs its scorer plan
            total = [t + med["scorer plan (fresh)"][i] for i, t in enumerate(total)]
        paper_share = (f", {total[0] / med['passes 2x128x32'][0]:.5f}x the paper-setting passes"
                       if "passes 2x128x32" in med else "")
        print(f"search-loop overhead, {builder[7:]:12s}: {total[0]:7.3f} ms cpu, {total[1]:7.3f} ms wall "
              f"= {total[0] / med['passes tiny'][0]:.3f}x the tiny passes{paper_share} (cpu)")
    print(f"draws: native is {med['draws: uniform_'][0] / med['draws: native'][0]:.1f}x faster than uniform_ (cpu); "
          f"reused build is {med['build: constructors'][0] / med['build: reused'][0]:.0f}x faster than the "
          f"constructors and {med['build: fresh'][0] / med['build: reused'][0]:.1f}x than a fresh build (cpu)")
    if args.search_iterations:
        gaps, inside, scored, median_params = in_search(args, space, device, tiny)
        print(f"real search() of {args.search_iterations} candidates (evolution, in-process backend after a "
              f"100-candidate warm-up, tiny passes; {scored} scored, the rest repeats; median {median_params:,.0f} "
              f"parameters), evaluate() taking turns; the passes' evaluate() {inside:.3f} ms cpu median")
        for name, times in gaps.items():
            if not times:  # fewer iterations than the turns need
                continue
            print(f"  loop overhead per candidate after '{name}': mean {statistics.mean(times):.3f} ms cpu, "
                  f"median {statistics.median(times):.3f} ({len(times)} candidates)")

if __name__ == "__main__":
    main()
