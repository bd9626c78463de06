"""The paper's evolutionary search and a random-search baseline over any SearchSpace, logged and resumable."""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zico_fast.jsonl_log import AppendLog, read_lines, settings_changes
from zico_fast.scorer import zico_score
from zico_fast.spaces.base import Cost, SearchSpace

LOG_FORMAT = "zico_fast.search/1"
MAX_DRAWS = 1000  # consecutive over-budget draws before the budget is declared impossible
WARMUP_MEMBERS = 10  # the paper mutates the initial structure until the population has this many


class SearchError(ValueError):
    """A search that cannot start or go on: an impossible budget, or a log written with other settings."""


@dataclass
class SearchResult:
    best_arch: str | None  # None when every candidate failed
    best_score: float
    best_cost: Cost | None
    best_iteration: int | None
    iterations: int  # candidates evaluated (fresh, cached or failed), over all resumed runs
    scored: int  # built and scored (failures included); the rest reused a cached score
    cached: int
    failed: int
    discarded: int  # draws over budget, never built
    population: list[tuple[str, float]]  # final members, best first
    history: list[tuple[int, float, float, float]] = field(repr=False)  # (iteration, best, median, min)
    log_path: Path = None
    settings: dict = field(default_factory=dict, repr=False)


class _Population:
    """Distinct members in insertion order (the order parents are drawn from); the lowest is evicted."""

    def __init__(self, capacity: int):
        self.capacity, self.members, self.archs = capacity, [], set()

    def add(self, arch: str, score: float) -> None:
        if arch in self.archs:  # a copy would add no information and crowd out distinct members
            return
        self.members.append((arch, score))
        self.archs.add(arch)
        if len(self.members) > self.capacity:
            lowest = min(range(len(self.members)), key=lambda i: self.members[i][1])  # oldest on ties
            self.archs.discard(self.members.pop(lowest)[0])


@dataclass(frozen=True)
class _Budget:
    max_flops: float | None
    max_params: float | None
    max_depth: int | None

    def allows(self, space: SearchSpace, arch: str, cost: Cost) -> bool:
        if hasattr(space, "within_budget"):  # MobileNet: ZiCo budgets the deployed net (with reslinks)
            return space.within_budget(arch, self.max_flops, self.max_params, self.max_depth)
        return ((self.max_flops is None or cost.flops <= self.max_flops)
                and (self.max_params is None or cost.params <= self.max_params)
                and (self.max_depth is None or cost.depth <= self.max_depth))


def _rng(seed: int, iteration: int) -> random.Random:
    # Every iteration draws from its own stream, so resuming needs no stored generator state.
    return random.Random(f"zico-search:{seed}:{iteration}")


def _init_seed(seed: int, arch: str) -> int:
    # Seeded by the architecture, so a cached score is exactly what re-scoring would give.
    return int.from_bytes(hashlib.sha256(f"{seed}:{arch}".encode()).digest()[:8], "little") >> 1


def _propose(space, strategy, members, warm, rng, budget) -> tuple[str, Cost, int]:
    for discarded in range(MAX_DRAWS):
        if strategy == "random":
            arch = space.random(rng)
        elif warm:
            arch = space.mutate(rng.choice(members)[0], rng, 2)
        else:
            arch = space.mutate(space.initial(rng), rng, 1)
        arch = space.canonical(arch)
        cost = space.cost(arch)
        if budget.allows(space, arch, cost):
            return arch, cost, discarded
    raise SearchError(f"impossible budget: {MAX_DRAWS} consecutive candidates were all over it "
                      f"(max_flops={budget.max_flops}, max_params={budget.max_params}, "
                      f"max_depth={budget.max_depth}); relax the budget")


def score_candidate(space, arch: str, batches, init_seed: int, device) -> tuple[float | None, str | None, float]:
    """(score, error, seconds) of one candidate; a failure is reported, never raised."""
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG untouched
            torch.manual_seed(init_seed)
            model = space.build(arch)
        score = zico_score(model.to(device), batches, restore=False, nonfinite="nan").score
        error = None if math.isfinite(score) else f"non-finite score {score} (an inf or NaN gradient)"
    except Exception as exc:  # any build or scoring failure is this candidate's, not the search's
        score, error = math.nan, f"{type(exc).__name__}: {exc}"
    return (score if error is None else None), error, time.perf_counter() - start


_WORKER: dict = {}


def _worker_init(space, batches, device, threads) -> None:
    # A search killed with -9 cannot stop its pool; without this watch its workers would wait forever.
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic = True
    _WORKER.update(space=space, device=device, batches=[(x.to(device), y.to(device)) for x, y in batches])


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_score(arch: str, init_seed: int):
    return score_candidate(_WORKER["space"], arch, _WORKER["batches"], init_seed, _WORKER["device"])


def _fingerprint(batches) -> dict:
    digest = hashlib.sha256()
    for x, y in batches:
        for t in (x, y):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": digest.hexdigest(), "shapes": [[list(x.shape), list(y.shape)] for x, y in batches]}


def _space_settings(space) -> dict:
    options = {k: v for k, v in sorted(vars(space).items())
               if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
    return {"name": getattr(space, "name", "custom"),
            "class": f"{type(space).__module__}.{type(space).__qualname__}", "options": options}


class _Log:
    """The search's JSON-lines log: a header with the settings, then one record per candidate.

    The header is written with the first record, so a search that fails before scoring anything
    (an impossible budget) leaves no log that would refuse the corrected settings.
    """

    def __init__(self, path: Path):
        self.path, self.settings, self.writer = path, None, AppendLog(path)
        try:
            lines = read_lines(path)
        except json.JSONDecodeError as exc:
            raise SearchError(f"{path} is corrupt ({exc}); it is not a log this search can resume") from None
        self.header, *self.lines = lines or [{}]
        if lines and (not isinstance(self.header, dict) or self.header.get("format") != LOG_FORMAT):
            raise SearchError(f"{path} is not a zico_fast search log; give a new log path")
        self.stored = self.header.get("settings", {})  # {} for a new log

    def resume(self, settings: dict) -> dict[int, dict]:
        """The logged records by iteration, once the log is known to come from these `settings`."""
        self.settings, old = settings, self.stored
        if old and old != settings:
            changed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in settings_changes(old, settings))
            raise SearchError(f"{self.path} was written by a search with other settings ({changed}); resume "
                              "with the same settings or give a new log path")
        records = {r["iteration"]: r for r in self.lines}
        if sorted(records) != list(range(len(self.lines))):
            raise SearchError(f"{self.path} has missing or repeated iterations; it cannot be resumed")
        return records

    def append(self, record: dict) -> None:
        if not self.stored:
            self.writer.append({"format": LOG_FORMAT, "settings": self.settings})
            self.stored = self.settings
        self.writer.append(record)

    def close(self) -> None:
        self.writer.close()


def search(space: SearchSpace, batches, *, iterations: int, population: int = 512, strategy: str = "evolution",
           seed: int = 0, max_flops: float | None = None, max_params: float | None = None,
           max_depth: int | None = None, log_path, device="cpu", workers: int | None = None,
           threads: int | None = None, data_info: dict | None = None, progress: bool = True) -> SearchResult:
    """Score `iterations` in-budget candidates of `space` with ZiCo on the same `batches`.

    evolution (the paper's): until the population has 10 members a child mutates `space.initial`
    in one block, afterwards a uniformly drawn parent in two blocks; the lowest member is dropped
    when more than `population`. random: `space.random` candidates. Every candidate is appended to
    `log_path` (JSON lines) before the next; if the log exists, the search replays it and goes on.
    Scores depend on the torch thread count (float summation order), so `threads` (default: the
    logged count, else the current one) and `workers` are settings; with `workers` > 1, evolution
    draws `workers` children at a time from the same population, which is a slightly different search.
    """
    if strategy not in ("evolution", "random"):
        raise ValueError(f"strategy must be 'evolution' or 'random', not {strategy!r}")
    if iterations < 0 or population < 1:
        raise ValueError(f"need iterations >= 0 and population >= 1, got {iterations} and {population}")
    log_path, device = Path(log_path), torch.device(device)
    log = _Log(log_path)
    workers = workers or log.stored.get("workers", 1)
    threads = threads or log.stored.get("threads", torch.get_num_threads())
    settings = {"space": _space_settings(space), "strategy": strategy, "seed": seed, "population": population,
                "max_flops": max_flops, "max_params": max_params, "max_depth": max_depth,
                "workers": workers, "threads": threads, "device": device.type,
                "data": {**(data_info or {}), **_fingerprint(batches)}}
    if device.type == "cuda":  # TF32 convolutions (cuDNN's default) give other scores than float32
        settings["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    budget = _Budget(max_flops, max_params, max_depth)
    logged = log.resume(settings)
    saved_threads, saved_cudnn = torch.get_num_threads(), torch.backends.cudnn.deterministic
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic = True  # cuDNN's fastest backward kernels are not reproducible
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init,
                                   initargs=(space, [(x.cpu(), y.cpu()) for x, y in batches], device, threads))
    state = _State(population)
    bar = tqdm(total=iterations, disable=not progress, desc=f"{strategy} search", unit="cand")
    try:
        # A round's children all come from the population as it stood at the round's start. Random
        # candidates ignore the population, so their rounds are longer: fewer waits on the slowest one.
        size = workers * (4 if strategy == "random" and workers > 1 else 1)
        for start in range(0, iterations, size):
            warm = len(state.pop.members) >= min(WARMUP_MEMBERS, population)
            members = list(state.pop.members)
            round_ = [(i, *_propose(space, strategy, members, warm, _rng(seed, i), budget))
                      for i in range(start, min(start + size, iterations))]
            fresh, known = {}, set(state.cache)
            for i, arch, _, _ in round_:  # score each new architecture once, in parallel with a pool
                if i not in logged and arch not in known:
                    init_seed = _init_seed(seed, arch)
                    fresh[arch] = (pool.submit(_worker_score, arch, init_seed) if pool else
                                   score_candidate(space, arch, batches, init_seed, device))
                known.add(arch)
            for i, arch, cost, discarded in round_:
                if i in logged:
                    record = logged[i]
                    if record["arch"] != arch or record["discarded"] != discarded:
                        raise SearchError(f"{log_path} does not replay: iteration {i} logged {record['arch']} "
                                          f"but this search proposes {arch}; was it written by another version?")
                elif arch in state.cache:
                    score, first = state.cache[arch]
                    error = None if score is not None else f"failed before, at iteration {first}"
                    record = _record(i, arch, cost, discarded, seed, score, 0.0, error, first)
                    log.append(record)
                else:
                    score, error, seconds = fresh[arch].result() if pool else fresh[arch]
                    record = _record(i, arch, cost, discarded, seed, score, seconds, error, None)
                    log.append(record)
                state.take(record, cost)
                bar.update(1)
                if state.best:
                    bar.set_postfix(best=f"{state.best[0]:.2f}", refresh=False)
    finally:
        bar.close()
        log.close()
        if pool:
            pool.shutdown(cancel_futures=True)
        torch.set_num_threads(saved_threads)
        torch.backends.cudnn.deterministic = saved_cudnn
    return state.result(log_path, settings)


class _State:
    """Everything a search accumulates; rebuilt exactly by replaying the log's records in order."""

    def __init__(self, population: int):
        self.pop = _Population(population)
        self.cache: dict[str, tuple[float | None, int]] = {}  # arch -> (score, None if failed; first iteration)
        self.counts = dict(scored=0, cached=0, failed=0, discarded=0)
        self.best: tuple[float, str, Cost, int] | None = None
        self.history: list[tuple[int, float, float, float]] = []

    def take(self, record: dict, cost: Cost) -> None:
        i, arch, score = record["iteration"], record["arch"], record["score"]
        self.counts["discarded"] += record["discarded"]
        self.counts["cached" if record["cached_from"] is not None else "scored"] += 1
        self.counts["failed"] += score is None
        self.cache.setdefault(arch, (score, i))
        if score is not None:
            self.pop.add(arch, score)
            if self.best is None or score > self.best[0]:
                self.best = (score, arch, cost, i)
        scores = [s for _, s in self.pop.members]
        self.history.append((i, self.best[0] if self.best else math.nan,
                             statistics.median(scores) if scores else math.nan, min(scores, default=math.nan)))

    def result(self, log_path: Path, settings: dict) -> SearchResult:
        score, arch, cost, iteration = self.best or (math.nan, None, None, None)
        return SearchResult(best_arch=arch, best_score=score, best_cost=cost, best_iteration=iteration,
                            iterations=len(self.history), **self.counts,
                            population=sorted(self.pop.members, key=lambda m: -m[1]),
                            history=self.history, log_path=log_path, settings=settings)


def _record(i, arch, cost, discarded, seed, score, seconds, error, cached_from) -> dict:
    return {"iteration": i, "arch": arch, "score": score, "flops": cost.flops, "params": cost.params,
            "depth": cost.depth, "seconds": round(seconds, 6), "error": error, "cached_from": cached_from,
            "discarded": discarded, "init_seed": _init_seed(seed, arch), "rng": f"zico-search:{seed}:{i}"}


def read_log(log_path) -> tuple[dict, list[dict]]:
    """(settings, records) of a search log, without a line torn by a kill."""
    header, *records = read_lines(Path(log_path))
    return header["settings"], records


def write_search_outputs(result: SearchResult, out_dir) -> None:
    """best.json, candidates.csv (one row per logged candidate) and search.png (score vs iteration)."""
    import csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cost = result.best_cost
    best = {"arch": result.best_arch, "score": result.best_score if result.best_arch else None,
            "iteration": result.best_iteration, "params": cost.params if cost else None,
            "flops": cost.flops if cost else None, "depth": cost.depth if cost else None,
            "iterations": result.iterations, "scored": result.scored, "cached": result.cached,
            "failed": result.failed, "discarded": result.discarded,
            "top": [{"arch": a, "score": s} for a, s in result.population[:10]], "settings": result.settings}
    (out / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    columns = ["iteration", "arch", "score", "flops", "params", "depth", "seconds", "error", "cached_from", "discarded"]
    with open(out / "candidates.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in read_log(result.log_path)[1] if r["iteration"] < result.iterations)
    _plot(result, out / "search.png")


def _plot(result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if result.history:
        its, best, median, low = zip(*result.history)
        ax.plot(its, best, label="best")
        ax.plot(its, median, label="population median")
        ax.plot(its, low, label="population min")
    ax.set_xlabel("iteration")
    ax.set_ylabel("ZiCo score")
    ax.set_title(f"{result.settings.get('strategy', '')} search: best {result.best_score:.2f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
