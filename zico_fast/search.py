"""The paper's evolutionary search and a random-search baseline over any SearchSpace, on the run
engine: one log, one seed rule, one reproducibility record, one scoring backend.

Determinism under any completion order: candidates are proposed a *generation* at a time, all from
the population as it stood when the generation began; their records are logged and join the
population in iteration order once the whole generation is back. So the workers, the backend and the
order in which results arrive never change the search; `generation` (a logged setting) does.
"""
from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from zico_fast.engine.evaluate import DEFAULT_PROXIES
from zico_fast.engine.backends import describe, make_backend
from zico_fast.engine.pool import Task, WorkerConfig
from zico_fast.engine.repro import check_device, check_threads, record as repro_record
from zico_fast.engine.run_log import RunLog, RunLogError, stored_settings
from zico_fast.engine.seeding import init_seed, proposal_rng
from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import Cost, SearchSpace

MAX_DRAWS = 1000  # consecutive over-budget draws before the budget is declared impossible
WARMUP_MEMBERS = 10  # the paper mutates the initial structure until the population has this many
DEFAULT_GENERATION = 16


class SearchError(ZiCoUserError):
    """A search that cannot start or go on: an impossible budget, or a log it cannot extend."""


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
    records: list[dict] = field(default_factory=list, repr=False)  # the log's records, in order
    log_path: Path = None
    settings: dict = field(default_factory=dict, repr=False)


class _Population:
    """Distinct members in insertion order (the order parents are drawn from); the lowest is evicted.
    `_ranked` keeps them sorted by (score, arrival), so eviction, median and minimum cost O(log n)
    lookups instead of a pass over a population of hundreds for every candidate."""

    def __init__(self, capacity: int):
        self.capacity, self.members, self.archs = capacity, [], set()
        self._ranked: list[tuple[float, int, str]] = []  # (score, arrival, arch): [0] is the lowest, oldest on ties
        self._arrivals = 0

    def rescore(self, fitness) -> None:
        """Re-evaluates every member (an ensemble fitness moves as the population of ranks grows)."""
        self.members = [(arch, fitness(arch)) for arch, _ in self.members]
        # members are in arrival order, so their positions order ties as the arrival numbers would
        self._ranked = sorted((score, i, arch) for i, (arch, score) in enumerate(self.members))
        self._arrivals = len(self.members)

    def add(self, arch: str, score: float) -> None:
        if arch in self.archs:  # a copy would add no information and crowd out distinct members
            return
        self.members.append((arch, score))
        self.archs.add(arch)
        bisect.insort(self._ranked, (score, self._arrivals, arch))
        self._arrivals += 1
        if len(self.members) > self.capacity:
            lowest, _, evicted = self._ranked.pop(0)
            self.members.remove((evicted, lowest))
            self.archs.discard(evicted)

    def median_and_min(self) -> tuple[float, float]:
        """statistics.median and min of the members' scores (NaN for an empty population)."""
        ranked, n = self._ranked, len(self._ranked)
        if not n:
            return math.nan, math.nan
        median = ranked[n // 2][0] if n % 2 else (ranked[n // 2 - 1][0] + ranked[n // 2][0]) / 2
        return median, ranked[0][0]


def _propose(space, strategy, members, warm, rng, budget, iteration) -> tuple[str, Cost, int]:
    if strategy == "all":  # the benchmark's architectures in index order
        arch = space.arch_from_index(iteration)  # in range: checked in _check_args
        return arch, space.cost(arch), 0
    for discarded in range(MAX_DRAWS):
        if strategy == "random":
            arch = space.random(rng)
        elif warm:
            arch = space.mutate(rng.choice(members)[0], rng, 2)
        else:
            arch = space.mutate(space.initial(rng), rng, 1)
        arch = space.canonical(arch)
        if space.within_budget(arch, *budget):
            return arch, space.cost(arch), discarded
    raise SearchError(f"impossible budget: {MAX_DRAWS} consecutive candidates were all over it (max_flops, "
                      f"max_params, max_depth = {budget}); relax the budget")


def _check_args(space, strategy, iterations, population, generation, budget) -> None:
    if strategy not in ("evolution", "random", "all"):
        raise SearchError(f"strategy must be 'evolution', 'random' or 'all', not {strategy!r}")
    for name, value in (("iterations", iterations), ("population", population), ("generation", generation)):
        if not isinstance(value, int) or value < 1:
            raise SearchError(f"{name} must be a positive integer, got {value!r}")
    if strategy == "all":  # every check before any work
        if not space.has_index:
            raise SearchError(f"--strategy all needs a space that numbers its architectures; {space.name} does not")
        if any(b is not None for b in budget):
            raise SearchError("--strategy all scores every architecture in index order; budgets apply to "
                              "evolution and random search, so leave out --max-flops/--max-params/--max-depth")
        try:  # the last index must exist
            space.arch_from_index(iterations - 1)
        except ValueError as exc:
            raise SearchError(f"--strategy all: iterations={iterations} goes past the space ({exc})") from None


def search(space: SearchSpace, batches, *, iterations: int, log_path, population: int = 512,
           strategy: str = "evolution", seed: int = 0, generation: int = DEFAULT_GENERATION,
           max_flops: float | None = None, max_params: float | None = None, max_depth: int | None = None,
           device="cpu", threads: int | None = None, workers: int = 1, backend=None,
           proxies=DEFAULT_PROXIES, fitness: str = "zico", progress: bool = False) -> SearchResult:
    """Score `iterations` in-budget candidates of `space` with ZiCo on the same `batches`.

    evolution (the paper's): until the population has 10 members a child mutates `space.initial`
    in one block, afterwards a uniformly drawn parent in two blocks; the lowest member is dropped
    when there are more than `population`. random: `space.random` candidates. all: the space's
    architectures in benchmark index order (iteration i is index i; no budgets). Every candidate is
    appended to the log at `log_path`; if it exists, the search replays it and goes on (with more
    `iterations`; fewer than the log holds is refused rather than reporting a prefix).
    `backend` (default: `workers` spawned processes, which survive a candidate's native crash).
    Scores depend on `threads` (default: the logged count, else torch's) but not on `workers`.
    fitness="ensemble" ranks candidates by the rank ensemble of zico_fast.proxies (the space's default
    members, `members_for(space.name)`, added to `proxies`; one warning where they are unvalidated):
    a candidate's fitness is its aggregate against every candidate logged so far, so it is a
    function of the log prefix (same on resume, whatever the arrival order).
    """
    if fitness not in ("zico", "ensemble"):
        raise SearchError(f"fitness must be 'zico' or 'ensemble', not {fitness!r}")
    members = _ensemble_members(space) if fitness == "ensemble" else ()
    proxies = tuple(dict.fromkeys((*proxies, *members)))
    budget = (max_flops, max_params, max_depth)
    _check_args(space, strategy, iterations, population, generation, budget)
    log_path = Path(log_path)
    device = check_device(device, on_this_machine=not getattr(backend, "remote", False))
    stored = stored_settings(log_path)
    threads = check_threads(threads or stored.get("repro", {}).get("threads"))
    settings = {"space": space.settings(), "strategy": strategy, "seed": seed, "population": population,
                "generation": generation, "max_flops": max_flops, "max_params": max_params,
                "max_depth": max_depth, "proxies": list(proxies), "repro": repro_record(device, threads, batches)}
    if fitness != "zico":  # only then, so logs of plain ZiCo searches keep their settings
        settings["fitness"] = {"kind": fitness, "members": list(members)}
    log = RunLog(log_path, "search", required=("id", "arch", "score"))
    backend = backend or make_backend(workers)
    try:
        logged = _by_iteration(log.open(settings), log_path)  # may lack some a salvage dropped: redone below
        if logged and max(logged) >= iterations:
            raise SearchError(f"{log_path} already holds {max(logged) + 1} candidates, more than iterations="
                              f"{iterations}; pass iterations >= {max(logged) + 1} to report the whole log, or "
                              "give another output folder")
        state = _State(population, members)
        started = False
        bar = _progress(progress, iterations, len(logged), strategy)
        for start in range(0, iterations, generation):
            warm = len(state.pop.members) >= min(WARMUP_MEMBERS, population)
            members = list(state.pop.members)
            children = [(i, *_propose(space, strategy, members, warm, proposal_rng(seed, i), budget, i))
                        for i in range(start, min(start + generation, iterations))]
            fresh, known = {}, set(state.cache)
            for i, arch, _, _ in children:
                if i not in logged and arch not in known:
                    fresh[arch] = Task(i, arch, init_seed=init_seed(seed, space.key(arch)))
                known.add(arch)
            if fresh and not started:
                backend.start(WorkerConfig(space, [[(x.cpu(), y.cpu()) for x, y in batches]], str(device),
                                           threads, seed, tuple(proxies)))
                log.describe_run(describe(backend))
                started = True
            scored = {task.arch: rec for task, rec in backend.run(list(fresh.values()))} if fresh else {}
            for i, arch, cost, discarded in children:  # in iteration order, whatever the arrival order
                if i in logged:
                    record = logged[i]
                    if record["arch"] != arch:
                        raise RunLogError(f"{log_path}:{i + 2}: iteration {i} logged {record['arch']} but this "
                                          f"search proposes {arch}; was it written by another version?")
                else:
                    if arch in scored:
                        record = {**scored.pop(arch), "cached_from": None}
                    else:
                        score, first = state.cache[arch]
                        record = {"score": score, "values": state.values[arch], "warnings": state.warnings[arch],
                                  "seconds": 0.0, "init_seed": init_seed(seed, space.key(arch)), "cached_from": first,
                                  "error": None if score is not None else f"failed before, at iteration {first}"}
                    record = {"id": i, "arch": arch, **record, "flops": cost.flops, "params": cost.params,
                              "depth": cost.depth, "discarded": discarded}
                    log.append(record)
                    bar.update(1)
                state.take(record, cost)
        bar.close()
    finally:
        log.close()
        backend.close()
    return state.result(log_path, settings)


def _ensemble_members(space: SearchSpace) -> tuple[str, ...]:
    """The space's default ensemble members; one warning where they were never validated."""
    from zico_fast.proxies.ensemble import SPACE_MEMBERS, UnvalidatedEnsembleWarning, members_for

    members = members_for(space.name)
    if space.name not in SPACE_MEMBERS:
        warnings.warn(f"the ensemble's members ({', '.join(members)}) were validated on held-out rows of the "
                      f"{' and '.join(SPACE_MEMBERS)} spaces, never on the {space.name} space; measure them "
                      "there (a correlate --proxies all run, then validation/scripts/selection_rules.py and "
                      "ensemble_per_space.py) before trusting the ranking",
                      UnvalidatedEnsembleWarning, stacklevel=3)
    return members


def _by_iteration(records: list[dict], log_path: Path) -> dict[int, dict]:
    logged = {}
    for record in records:
        if record["id"] in logged:
            raise RunLogError(f"{log_path} holds iteration {record['id']} twice; `zico-fast salvage {log_path}` "
                              "keeps the first, then the same run resumes")
        logged[record["id"]] = record
    return logged


def _progress(enabled: bool, total: int, done: int, strategy: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc=f"{strategy} search", unit="cand")


class _State:
    """Everything a search accumulates; rebuilt exactly by replaying the log's records in order."""

    def __init__(self, population: int, members: tuple[str, ...] = ()):
        self.pop = _Population(population)
        self.ensemble = None
        if members:  # fitness="ensemble"
            from zico_fast.proxies.ensemble import SearchFitness

            self.ensemble = SearchFitness(members)
        self.costs: dict[str, Cost] = {}
        self.cache: dict[str, tuple[float | None, int]] = {}  # arch -> (score or None; first iteration)
        self.values: dict[str, dict] = {}
        self.warnings: dict[str, list] = {}  # arch -> its first record's warnings (a cached copy repeats them)
        self.counts = dict(scored=0, cached=0, failed=0, discarded=0)
        self.best: tuple[float, str, Cost, int] | None = None
        self.history: list[tuple[int, float, float, float]] = []
        self.records: list[dict] = []

    def take(self, record: dict, cost: Cost) -> None:
        i, arch, score = record["id"], record["arch"], record["score"]
        self.records.append(record)
        self.counts["discarded"] += record["discarded"]
        self.counts["cached" if record["cached_from"] is not None else "scored"] += 1
        self.counts["failed"] += score is None
        self.cache.setdefault(arch, (score, i))
        self.values.setdefault(arch, record.get("values", {}))
        self.warnings.setdefault(arch, record.get("warnings", []))
        if score is not None and self.ensemble is not None:
            if record["cached_from"] is None:  # a repeat adds no new network to the population of ranks
                self.ensemble.add(record["values"])
            self.pop.rescore(lambda a: self.ensemble.of(self.values[a]))
            score = self.ensemble.of(self.values[arch])
        if score is not None:
            self.pop.add(arch, score)
            if self.ensemble is not None:  # fitnesses moved: the best is the top member now
                self.costs[arch] = cost
                top_arch, top = max(self.pop.members, key=lambda m: m[1])  # the earliest on ties
                self.best = (top, top_arch, self.costs[top_arch], self.cache[top_arch][1])
            elif self.best is None or score > self.best[0]:
                self.best = (score, arch, cost, i)
        self.history.append((i, self.best[0] if self.best else math.nan, *self.pop.median_and_min()))

    def result(self, log_path: Path, settings: dict) -> SearchResult:
        score, arch, cost, iteration = self.best or (math.nan, None, None, None)
        return SearchResult(best_arch=arch, best_score=score, best_cost=cost, best_iteration=iteration,
                            iterations=len(self.history), **self.counts,
                            population=sorted(self.pop.members, key=lambda m: -m[1]), history=self.history,
                            records=self.records, log_path=log_path, settings=settings)
