"""Scoring backends: where candidates are scored. One interface, so another backend (a cluster)
plugs in beside the local ones:

    backend.start(config)                 # once: every worker holds the space, batches and torch settings
    for task, record in backend.run(tasks):   # any completion order; one record per task, always
        ...
    backend.close()

A record is `score_candidate`'s dict. The run (search, correlate) orders records by task id
before logging them, so the order of arrival never changes a log.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Iterator, Protocol, Sequence

import torch

from zico_fast.engine.evaluate import DEFAULT_PROXIES, score_candidate
from zico_fast.engine.repro import torch_settings
from zico_fast.engine.seeding import CandidateBuilder, init_seed
from zico_fast.engine.worker_life import death_cause, die_with_parent
from zico_fast.errors import ZiCoUserError


@dataclass(frozen=True)
class Task:
    id: int  # the candidate's position in the run (search iteration, correlate row x repeat)
    arch: str
    batch_set: int = 0  # which of the config's batch sets to score on
    # The seed rule's init_seed for arch, when the run computes it (search does, for a whole generation
    # at once: a worker hashing it between two candidates' passes spends ~10x the time on cache misses)
    init_seed: int | None = None


@dataclass
class WorkerConfig:
    space: object
    batch_sets: list  # [[(inputs, targets), ...], ...] on the CPU; workers move them to `device` once
    device: str
    threads: int
    seed: int
    proxies: tuple = DEFAULT_PROXIES
    extra: dict = field(default_factory=dict)  # backend-specific (e.g. GPU fraction); not used by scoring


class Backend(Protocol):
    def start(self, config: WorkerConfig) -> None: ...
    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, dict]]: ...
    def close(self) -> None: ...


class PoolError(ZiCoUserError):
    """Workers that cannot start (e.g. a space defined in `__main__` without a main guard)."""


def failed_record(config: WorkerConfig, task: Task, error: str) -> dict:
    """The record of a candidate whose scoring process died (score_candidate's fields)."""
    return {"score": None, "values": {}, "warnings": [], "seconds": None,
            "init_seed": init_seed(config.seed, config.space.key(task.arch)), "error": error}


def device_batch_sets(config: WorkerConfig) -> list:
    """The run's batch sets on the scoring device, moved once per worker."""
    return [[(x.to(config.device), y.to(config.device)) for x, y in s] for s in config.batch_sets]


@dataclass
class WorkerState:
    """What a scoring worker keeps between candidates: the batches on its device and its builder
    (which reuses one network's modules when only ZiCo is scored: that path leaves them clean)."""

    batch_sets: list
    builder: CandidateBuilder


def worker_state(config: WorkerConfig) -> WorkerState:
    reuse = tuple(config.proxies) == DEFAULT_PROXIES
    return WorkerState(device_batch_sets(config), CandidateBuilder(config.space, config.seed, config.device, reuse))


def prepare_worker_process(config: WorkerConfig) -> WorkerState:
    """A dedicated scoring process's one-time set-up (local worker or Ray actor): the run's thread
    count and cuDNN flags, set for the whole process, and its worker state."""
    torch.set_num_threads(config.threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return worker_state(config)


def score_task(config: WorkerConfig, state: WorkerState, task: Task) -> dict:
    return score_candidate(config.space, task.arch, state.batch_sets[task.batch_set], config.seed, config.device,
                           config.proxies, state.builder, task.init_seed)


def send_order(queues: dict, todo, ahead: int):
    """The workers that get the next waiting task, one per step: every idle worker first, then up to
    `ahead` more each, but only while at least as many tasks wait as there are workers, so no worker
    holds back the last ones from an idle one. `queues`: each worker's tasks in flight; both they
    and `todo` are read afresh at each step, so the caller sends in between."""
    for depth in range(ahead + 1):
        for worker, queue in queues.items():
            if todo and len(queue) == depth and (depth == 0 or len(todo) >= len(queues)):
                yield worker


class InProcessBackend:
    """Scores in the calling process: no start-up cost, but a native crash ends the run."""

    def start(self, config: WorkerConfig) -> None:
        self.config = config
        self.state = worker_state(config)

    def run(self, tasks):
        with torch_settings(self.config.threads):
            for task in tasks:
                yield task, score_task(self.config, self.state, task)

    def describe(self) -> dict:
        return {"kind": "in-process", "workers": 1, "cpus": os.cpu_count()}

    def close(self) -> None:
        pass


def _worker_main(conn, config: WorkerConfig, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pool
    die_with_parent(parent)
    try:
        state = prepare_worker_process(config)
    except Exception:
        conn.send(("init-error", traceback.format_exc(limit=3)))
        return
    conn.send(("ready", None))
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(("done", (task, score_task(config, state, task))))


class ProcessBackend:
    """`workers` spawned processes, each scoring one candidate at a time while `ahead` more wait in
    its pipe. A worker that dies inside a candidate (a segfault, an abort, the OOM killer) fails
    that candidate alone: it is recorded with the cause and a fresh worker takes the dead one's place."""

    def __init__(self, workers: int = 1, ahead: int = 1):
        if not isinstance(workers, int) or workers < 1:
            raise ZiCoUserError(f"workers must be a positive integer, got {workers!r}")
        if not isinstance(ahead, int) or ahead < 0:
            raise ZiCoUserError(f"ahead must be a non-negative integer, got {ahead!r}")
        cpus = os.cpu_count() or 1
        if workers > cpus:  # each worker is a whole process with its own torch (~220 MB before any network)
            warnings.warn(f"{workers} worker processes on {cpus} CPUs share the cores and hold ~220 MB each; "
                          f"--workers {cpus} or fewer is usually as fast", RuntimeWarning, stacklevel=2)
        self.workers, self._procs, self.respawned = workers, [], 0
        self._idle = True  # False from start() or run() until it completes: close() then kills the workers
        self.ahead = ahead  # tasks in a worker's pipe beyond the one it scores (see run)

    def start(self, config: WorkerConfig) -> None:
        self.config, self._context, self._idle = config, multiprocessing.get_context("spawn"), False
        self._procs = [self._launch() for _ in range(self.workers)]  # all start in parallel
        self._procs = [self._ready(*p) for p in self._procs]
        self._idle = True

    def describe(self) -> dict:
        """Where this run scored (logged in a new log's header)."""
        return {"kind": "local", "workers": self.workers, "cpus": os.cpu_count()}

    def _spawn(self):
        return self._ready(*self._launch())

    def _launch(self):
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(theirs, self.config, os.getpid()), daemon=True)
        process.start()
        theirs.close()
        return process, ours

    def _ready(self, process, ours):
        try:
            kind, detail = ours.recv()
        except EOFError:
            process.join()
            raise PoolError(f"a scoring worker died while starting ({death_cause(process)}); if you run from a script, "
                            "guard it with `if __name__ == '__main__':` and define the space in an importable "
                            "module") from None
        if kind == "init-error":
            raise PoolError(f"a scoring worker could not start:\n{detail}")
        return process, ours

    def run(self, tasks):
        """Each worker holds the task it scores and `ahead` more, already in its pipe, so it goes
        on without waiting for this process (the round trip cost a worker ~0.7 ms per candidate:
        benchmarks/RESULTS.md); send_order decides who gets the next one."""
        todo = list(reversed(tasks))
        sent: dict[int, deque] = {w: deque() for w in range(len(self._procs))}  # oldest: the one it scores
        self._idle = False
        while todo or any(sent.values()):
            for w in send_order(sent, todo, self.ahead):
                self._send(w, sent[w], todo)
            by_handle = {}
            for w, queue in sent.items():
                if queue:
                    process, conn = self._procs[w]
                    by_handle[conn] = by_handle[process.sentinel] = w
            for w in dict.fromkeys(by_handle[handle] for handle in wait(list(by_handle))):
                process, conn = self._procs[w]
                try:
                    kind, (task, record) = conn.recv()  # a result in the pipe comes before a death
                except (EOFError, OSError):  # the worker died inside the oldest task it was sent
                    process.join()
                    task = sent[w].popleft()
                    record = failed_record(self.config, task,
                                           f"the scoring process died ({death_cause(process)}) inside this candidate")
                    todo += reversed(sent[w])  # sent ahead, never started: scored by whoever comes next
                    sent[w].clear()
                    conn.close()
                    self._procs[w] = self._spawn()
                    self.respawned += 1
                else:
                    oldest = sent[w].popleft()
                    if task != oldest:  # a worker scores its pipe in order; anything else is a bug here
                        raise PoolError(f"a scoring worker answered task {task.id} while {oldest.id} was due")
                yield task, record
        self._idle = True

    def _send(self, w: int, queue: deque, todo: list) -> None:
        task = todo.pop()
        try:
            self._procs[w][1].send(task)
        except OSError:
            if queue:  # it died with a task in hand: the wait in run() records that one
                todo.append(task)
                return
            self._procs[w][1].close()  # it died while idle (e.g. the OOM killer): replace it
            self._procs[w] = self._spawn()
            self.respawned += 1
            self._procs[w][1].send(task)
        queue.append(task)

    def close(self) -> None:
        """After a completed run the workers are told to exit; after one stopped by a signal or an
        error they are killed at once, since a candidate in hand can take minutes and its result
        would be dropped anyway."""
        for process, conn in self._procs:
            if not self._idle:
                process.kill()
                continue
            try:
                conn.send(None)
            except OSError:
                pass
        for process, conn in self._procs:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._procs, self._idle = [], True
