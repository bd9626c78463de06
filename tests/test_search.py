"""Tests of the evolutionary / random search: reproducible, resumable after kill -9, budgets, failures, memory."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from zico_fast.data import make_batches
from zico_fast.engine import InProcessBackend, init_seed
from zico_fast.errors import ZiCoUserError
from zico_fast.reporting import write_search_outputs
from zico_fast.search import SearchError, search
from zico_fast.spaces import Cost, SearchSpace
from testing import logged_without_timings

ROOT = Path(__file__).resolve().parents[1]


class TinySpace(SearchSpace):
    """Two conv widths 'w{a}-{b}'; a % 5 == 0 fails to build and b % 7 == 0 gives a NaN score."""

    name = "tiny"

    def __init__(self, widths=range(2, 34)):
        self.low, self.high = min(widths), max(widths)
        self.builds: list[str] = []

    def _widths(self, arch):
        a, b = arch[1:].split("-")
        return int(a), int(b)

    def canonical(self, arch):
        a, b = self._widths(arch)
        if not (self.low <= a <= self.high and self.low <= b <= self.high):
            raise ValueError(f"widths of {arch!r} out of range")
        return f"w{a}-{b}"

    def initial(self, rng):
        return f"w{self.low}-{self.low}"

    def random(self, rng):
        return f"w{rng.randint(self.low, self.high)}-{rng.randint(self.low, self.high)}"

    def mutate(self, arch, rng, num_blocks=1):
        widths = list(self._widths(arch))
        for i in rng.sample(range(2), min(num_blocks, 2)):
            widths[i] = rng.choice([w for w in range(self.low, self.high + 1) if w != widths[i]])
        return f"w{widths[0]}-{widths[1]}"

    def build(self, arch):
        self.builds.append(arch)
        a, b = self._widths(arch)
        if a % 5 == 0:
            raise RuntimeError(f"cannot build {arch}")
        layers = [nn.Conv2d(3, a, 3, padding=1, bias=False), nn.BatchNorm2d(a), nn.ReLU(),
                  nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(b, 10)]
        if b % 7 == 0:
            layers.append(Scale(float("nan")))
        return nn.Sequential(*layers)

    def cost(self, arch):
        a, b = self._widths(arch)
        params = 27 * a + 2 * a + 9 * a * b + 2 * b + 10 * b + 10
        return Cost(params=params, flops=27 * a * 1024 + 9 * a * b * 256 + 10 * b, depth=2)


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@pytest.fixture(scope="module")
def batches():
    return make_batches(batch_size=8, num_batches=2, seed=0)


def run(space, batches, log, **kw):
    # One thread: scores depend on the thread count, and one thread each stays fast on busy cores.
    # In-process unless workers are asked for: TinySpace counts its builds in this process.
    kw = {"iterations": 40, "population": 8, "seed": 3, "threads": 1, "generation": 4, **kw}
    if "workers" not in kw:
        kw["backend"] = InProcessBackend()
    return search(space, batches, log_path=log, **kw)


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_same_seed_same_records(strategy, batches, tmp_path):
    first = run(TinySpace(), batches, tmp_path / "a.jsonl", strategy=strategy)
    second = run(TinySpace(), batches, tmp_path / "b.jsonl", strategy=strategy)
    assert logged_without_timings(tmp_path / "a.jsonl") == logged_without_timings(tmp_path / "b.jsonl")
    assert (first.best_arch, first.best_score) == (second.best_arch, second.best_score)
    assert first.iterations == 40 and len(logged_without_timings(tmp_path / "a.jsonl")) == 40
    run(TinySpace(), batches, tmp_path / "c.jsonl", strategy=strategy, seed=4)
    assert logged_without_timings(tmp_path / "c.jsonl") != logged_without_timings(tmp_path / "a.jsonl")


def test_evolution_follows_the_paper(batches, tmp_path):
    space = TinySpace()
    result = run(space, batches, tmp_path / "log.jsonl", iterations=60)
    assert len(result.population) == 8 and result.population == sorted(result.population, key=lambda m: -m[1])
    # Before the population reaches 8 (< 10) members, every child is one block away from the initial.
    start = space.initial(None)
    for r in logged_without_timings(tmp_path / "log.jsonl")[:5]:
        assert sum(x != y for x, y in zip(space._widths(r["arch"]), space._widths(start))) == 1
    assert result.best_score == max(r["score"] for r in logged_without_timings(tmp_path / "log.jsonl") if r["score"] is not None)
    assert min(s for _, s in result.population) == result.history[-1][3]


def test_identical_candidates_are_scored_once(batches, tmp_path):
    space = TinySpace(widths=range(2, 6))  # 16 architectures, so 50 draws repeat many
    result = run(space, batches, tmp_path / "log.jsonl", iterations=50, strategy="random")
    logged = logged_without_timings(tmp_path / "log.jsonl")
    assert sorted(space.builds) == sorted({r["arch"] for r in logged})
    assert result.cached == 50 - len(space.builds) > 0
    first = {}
    for r in logged:
        if r["cached_from"] is None:
            first[r["arch"]] = r
        else:
            assert first[r["arch"]]["id"] == r["cached_from"] and first[r["arch"]]["score"] == r["score"]
    # scored or cached, each record's weights seed is the seed rule's (the search hands it to the worker)
    assert all(r["init_seed"] == init_seed(3, space.key(r["arch"])) for r in logged)


def test_failing_candidates_are_recorded_not_fatal(batches, tmp_path):
    result = run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=60, strategy="random")
    logged = logged_without_timings(tmp_path / "log.jsonl")
    failed = [r for r in logged if r["error"]]
    assert any("cannot build" in r["error"] for r in failed)
    assert any("non-finite ZiCo score" in r["error"] for r in failed)
    assert all(r["score"] is None for r in failed) and result.failed == len(failed)
    bad = {r["arch"] for r in failed}
    assert not bad & {arch for arch, _ in result.population}


def test_budgets_are_respected(batches, tmp_path):
    result = run(TinySpace(), batches, tmp_path / "log.jsonl", strategy="random", max_params=3000, max_flops=2e6)
    logged = logged_without_timings(tmp_path / "log.jsonl")
    assert all(r["params"] <= 3000 and r["flops"] <= 2e6 for r in logged)
    assert result.discarded == sum(r["discarded"] for r in logged) > 0
    with pytest.raises(SearchError, match="impossible budget"):
        run(TinySpace(), batches, tmp_path / "none.jsonl", max_params=10)
    assert not (tmp_path / "none.jsonl").exists()  # nothing to refuse a corrected budget with


def test_strategy_all_scores_the_benchmark_in_index_order(tmp_path):
    from zico_fast.spaces.nb201 import NB201Space

    space, small = NB201Space(C=4, N=1, resolution=16), make_batches(batch_size=4, num_batches=2, seed=0, resolution=16)
    result = run(space, small, tmp_path / "all.jsonl", strategy="all", iterations=7, generation=3)
    logged = logged_without_timings(tmp_path / "all.jsonl")
    assert [space.index_of(r["arch"]) for r in logged] == list(range(7)) and result.iterations == 7
    assert result.best_score == max(r["score"] for r in logged if r["score"] is not None)
    with pytest.raises(SearchError, match="goes past the space"):
        run(space, small, tmp_path / "past.jsonl", strategy="all", iterations=15_626)
    with pytest.raises(SearchError, match="budgets apply"):
        run(space, small, tmp_path / "budget.jsonl", strategy="all", max_params=1e6)
    with pytest.raises(SearchError, match="numbers its architectures"):
        run(TinySpace(), small, tmp_path / "tiny.jsonl", strategy="all")
    assert not any((tmp_path / f"{n}.jsonl").exists() for n in ("past", "budget", "tiny"))


def test_resume_refuses_other_settings(batches, tmp_path):
    run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=3)
    with pytest.raises(ZiCoUserError, match="other settings.*seed: 3 -> 4"):
        run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=3, seed=4)
    with pytest.raises(ZiCoUserError, match="other settings.*repro"):
        run(TinySpace(), batches[:1] + batches[:1], tmp_path / "log.jsonl", iterations=3)
    with pytest.raises(ZiCoUserError, match="other settings.*threads"):
        run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=3, threads=2)


def test_fewer_iterations_than_the_log_holds_is_refused(batches, tmp_path):
    run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=6)
    before = (tmp_path / "log.jsonl").read_bytes()
    with pytest.raises(SearchError, match="already holds 6 candidates.*iterations >= 6"):
        run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=4)
    assert (tmp_path / "log.jsonl").read_bytes() == before
    assert run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=6).iterations == 6


def test_resume_drops_a_truncated_line_and_repeats_nothing(batches, tmp_path):
    run(TinySpace(), batches, tmp_path / "full.jsonl")
    run(TinySpace(), batches, tmp_path / "cut.jsonl", iterations=15)
    with open(tmp_path / "cut.jsonl", "ab") as f:
        f.write(b'{"iteration": 15, "arch": "w3-')  # killed in the middle of writing a record
    logged = {r["arch"] for r in logged_without_timings(tmp_path / "cut.jsonl")}
    space = TinySpace()
    result = run(space, batches, tmp_path / "cut.jsonl")
    assert logged_without_timings(tmp_path / "cut.jsonl") == logged_without_timings(tmp_path / "full.jsonl")
    assert not logged & set(space.builds) and len(space.builds) == len(set(space.builds))
    assert result.iterations == 40


@pytest.mark.slow
def test_worker_processes_give_the_same_records(batches, tmp_path):
    """Spawned workers (one or two) log what the in-process backend logs; workers are no setting,
    so a search resumes with another count and ends where an uninterrupted one does."""
    for strategy in ("random", "evolution"):
        run(TinySpace(), batches, tmp_path / f"{strategy}0.jsonl", strategy=strategy, iterations=12)
        run(TinySpace(), batches, tmp_path / f"{strategy}2.jsonl", strategy=strategy, iterations=12, workers=2)
        assert logged_without_timings(tmp_path / f"{strategy}0.jsonl") == logged_without_timings(tmp_path / f"{strategy}2.jsonl")
    run(TinySpace(), batches, tmp_path / "evo.jsonl", iterations=6, workers=2)
    result = run(TinySpace(), batches, tmp_path / "evo.jsonl", iterations=12, workers=1)
    assert result.iterations == 12 and logged_without_timings(tmp_path / "evo.jsonl") == logged_without_timings(tmp_path / "evolution0.jsonl")


def test_outputs(batches, tmp_path):
    result = run(TinySpace(), batches, tmp_path / "log.jsonl", iterations=20)
    write_search_outputs(result, tmp_path / "out", {"source": "bundled"})
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["arch"] == result.best_arch and best["score"] == result.best_score
    assert len((tmp_path / "out" / "candidates.csv").read_text().splitlines()) == 21
    assert (tmp_path / "out" / "search.png").stat().st_size > 1000


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat(batches, tmp_path):
    """Nothing kept per candidate: the RSS growth of two consecutive windows of 200 candidates, after
    a warm-up. A one-off step (an allocator arena, a cache filling up) lands in one window; memory
    kept per candidate grows in both."""
    space = TinySpace(widths=range(2, 65))
    growth, rss = [], None
    # oneDNN keeps compiled kernels per conv shape (bounded, but ~100 MB over a few thousand shapes);
    # TinySpace's widths give every candidate new shapes, so measure the search's own memory without it.
    with torch.backends.mkldnn.flags(enabled=False):
        for iterations in (100, 300, 500):  # one log: each run resumes the last and adds 200 candidates
            result = run(space, batches, tmp_path / "log.jsonl", iterations=iterations, strategy="random",
                         population=16)
            if rss is not None:
                growth.append(rss_mb() - rss)
            rss = rss_mb()
    assert result.scored >= 400 and min(growth) < 10, (result.scored, growth)


def cli_search(out, iterations):
    return [sys.executable, "-m", "zico_fast", "search", "--space", "nb201", "--iterations", str(iterations),
            "--population", "4", "--seed", "1", "--batch-size", "8", "--device", "cpu", "--out", str(out),
            "--threads", "1", "--generation", "2", "--no-progress"]


def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cli_search(tmp_path / "full", 14), check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(cli_search(tmp_path / "killed", 14), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "search.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= 5:  # header + 4 records
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(logged_without_timings(log)) < 14, "the run was not killed mid-search"
    subprocess.run(cli_search(tmp_path / "killed", 14), check=True, env=env, capture_output=True, timeout=300)
    assert logged_without_timings(log) == logged_without_timings(tmp_path / "full" / "search.jsonl")


def test_population_matches_the_plain_rules_on_random_streams():
    """The ranked population against the rules written plainly: evict the lowest (the oldest on ties),
    parents drawn from insertion order, median and minimum as statistics.median and min."""
    import random
    import statistics

    from zico_fast.search import _Population

    for trial in range(20):
        rng = random.Random(trial)
        capacity = rng.randint(1, 12)
        ours, members = _Population(capacity), []
        for step in range(200):
            arch, score = f"a{rng.randrange(60)}", float(rng.randrange(8)) / rng.choice([1, 3])  # many ties
            ours.add(arch, score)
            if arch not in {a for a, _ in members}:
                members.append((arch, score))
                if len(members) > capacity:
                    members.pop(min(range(len(members)), key=lambda i: members[i][1]))
            assert ours.members == members, (trial, step)
            scores = [s for _, s in members]
            assert ours.median_and_min() == (statistics.median(scores), min(scores))
        ours.rescore(lambda a: -len(a))
        assert ours.median_and_min()[1] == min(-len(a) for a, _ in members)
