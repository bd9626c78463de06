"""The run engine for a user's own search loop: `Scorer` scores the candidates a loop proposes on
the engine's backends (worker processes or Ray) with the seed rule, crash isolation, a cache by the
space's key and an optional run log that a restarted loop resumes from.

    with zico_fast.Scorer(space, batches, workers=4) as scorer:
        records = scorer.score(archs)          # one record per arch, in the order asked
"""
from __future__ import annotations

import warnings
from pathlib import Path

from zico_fast.engine.evaluate import DEFAULT_PROXIES, ZERO_SPREAD
from zico_fast.engine.backends import describe, make_backend
from zico_fast.engine.pool import Task, WorkerConfig
from zico_fast.engine.repro import check_device, check_threads, record as repro_record
from zico_fast.engine.run_log import RunLog, RunLogError
from zico_fast.engine.seeding import init_seed
from zico_fast.errors import ZiCoUserError
from zico_fast.model_factories import FactorySpace, factory_name
from zico_fast.proxies.registry import resolve_names
from zico_fast.scorer import ZeroSpreadWarning
from zico_fast.spaces.base import SearchSpace

LOG_KIND = "scorer"


class Scorer:
    """Scores batches of candidates of `space` on `batches` (a list of at least 2 (inputs, targets)).

    space: a SearchSpace; its candidates are architecture strings. None: the candidates are model
        factories instead (zero-argument callables returning an nn.Module, see model_factories).
    backend: "local" (`workers` spawned processes: a candidate that crashes its process natively is a
        failed record, the loop goes on), "ray" (`workers` actors on the Ray cluster at `ray_address`,
        each with `gpus_per_worker` of a GPU) or any object with the engine's Backend interface.
    proxies: computed in ZiCo's passes besides ZiCo (names of zico_fast.proxies; ZiCo always comes first).
    log: a run log (JSON lines) of every scored candidate. A Scorer opened on an existing log with the
        same settings (space, seed, proxies, threads, device, batches) starts with its records cached,
        so a killed loop that proposes the same candidates again re-scores none of them; other
        settings are refused with the differences named. A damaged log is repaired by `zico-fast
        salvage LOG`; the records it could not keep are scored again when proposed again.
    seed: the seed rule's seed: a candidate's initial weights depend on (seed, space.key(arch)) only,
        so the same arch scores the same here as in `zico-fast score --seed S`, search and correlate.

    `score(archs)` returns one dict per arch, in the order asked: id (its number in the log), arch
    (canonical spelling, or 'module:name' of a factory), key, score (ZiCo; None when the candidate
    failed or its ZiCo is not finite), values ({proxy: value}), error (None or why it failed), warnings
    (a zero-spread candidate's ZeroSpreadWarning, also warned when scored), seconds, init_seed and
    cached (True when this call did not score it: an earlier call, the log or an earlier repeat in
    the same call did). Repeats are scored once, by the space's key.
    """

    def __init__(self, space: SearchSpace | None, batches, *, workers: int = 1, backend="local",
                 proxies=DEFAULT_PROXIES, log=None, seed: int = 0, device="cpu", threads: int = 1,
                 ray_address: str | None = None, gpus_per_worker: float = 0.0):
        if space is not None and not isinstance(space, SearchSpace):
            raise ZiCoUserError(f"space must be a zico_fast SearchSpace (or None to score model factories), not a "
                                f"{type(space).__name__}")
        self.space = FactorySpace() if space is None else space
        self.proxies = tuple(dict.fromkeys(("zico", *resolve_names(proxies))))
        if space is None and {"params", "flops"} & set(self.proxies):
            raise ZiCoUserError("params/flops come from a space's analytic cost; model factories have none, so "
                                "leave them out of proxies")
        batches = [(x.detach().cpu(), y.detach().cpu()) for x, y in batches]
        if len(batches) < 2:
            raise ZiCoUserError(f"ZiCo needs at least 2 batches (it measures how gradients vary between them); "
                                f"got {len(batches)}")
        if not isinstance(seed, int):
            raise ZiCoUserError(f"seed must be an integer, got {seed!r}")
        if isinstance(backend, str):
            backend = make_backend(workers, kind=backend, ray_address=ray_address, gpus_per_worker=gpus_per_worker)
        self.backend, self.seed, self.batches = backend, seed, batches
        self.remote = bool(getattr(backend, "remote", False))  # scores on a cluster's machines
        self.device = check_device(device, on_this_machine=not self.remote)
        self.threads = check_threads(threads)
        self._cache: dict[str, dict] = {}  # key -> the record that scored it
        self._started = self._closed = False
        self._log, self._next_id = None, 0
        if log is not None:
            self._open_log(Path(log))

    def settings(self) -> dict:
        """What a log's header holds: everything besides the arch that changes a record."""
        return {"space": self.space.settings(), "seed": self.seed, "proxies": list(self.proxies),
                "repro": repro_record(self.device, self.threads, self.batches)}

    def _open_log(self, path: Path) -> None:
        self._log = RunLog(path, LOG_KIND, required=("id", "arch", "key", "score"))
        logged = self._log.open(self.settings())
        ids = [r["id"] for r in logged]
        if len(set(ids)) < len(ids):
            self._log.close()
            raise RunLogError(f"{path} holds a record id twice; `zico-fast salvage {path}` keeps the first of each, "
                              "then the Scorer resumes from it")
        # Gaps are records a salvage dropped (a damaged line): their candidates are not cached, so the
        # loop's next proposal of one scores it again, under a new id.
        for record in logged:
            self._cache.setdefault(record["key"], record)
        self._next_id = max(ids, default=-1) + 1

    def _canonical(self, arch) -> str:
        if isinstance(self.space, FactorySpace):
            return factory_name(arch, remote=self.remote)
        if not isinstance(arch, str):
            raise ZiCoUserError(f"this Scorer scores {self.space.name} architectures (strings), not a "
                                f"{type(arch).__name__}; to score model factories make it with space=None")
        try:
            return self.space.canonical(arch)
        except ValueError as error:
            raise ZiCoUserError(f"{self.space.name} space: {error}") from None

    def score(self, archs) -> list[dict]:
        """One record per arch of `archs`, in that order (see the class); new keys are scored in
        parallel on the backend and logged in the order asked, whatever order they finish in."""
        if self._closed:
            raise ZiCoUserError("this Scorer is closed; make a new one (with the same log to keep its records)")
        names = [self._canonical(a) for a in archs]  # every arch checked before any work
        keys = [self.space.key(n) for n in names]
        fresh: dict[str, Task] = {}
        for name, key in zip(names, keys):
            if key not in self._cache and key not in fresh:
                fresh[key] = Task(self._next_id, name, init_seed=init_seed(self.seed, key))
                self._next_id += 1
        if fresh:
            self._score(list(fresh.values()), {task.id: key for key, task in fresh.items()})
        records, first = [], {task.id for task in fresh.values()}
        for key in keys:
            record = self._cache[key]
            records.append({**record, "values": dict(record["values"]), "cached": record["id"] not in first})
            first.discard(record["id"])  # a repeat later in this call is a cached copy
        return records

    def _score(self, tasks: list[Task], key_of: dict[int, str]) -> None:
        if not self._started:
            self.backend.start(WorkerConfig(self.space, [self.batches], str(self.device), self.threads, self.seed,
                                            self.proxies))
            self._started = True
            if self._log is not None:
                self._log.describe_run(describe(self.backend))
        # A reorder buffer: records are logged in task order, so a log never depends on which worker
        # finished first, and a kill loses only the records still waiting for an earlier one.
        waiting, next_id = {}, tasks[0].id
        for task, result in self.backend.run(tasks):
            waiting[task.id] = {"id": task.id, "arch": task.arch, "key": key_of[task.id], **result}
            while next_id in waiting:
                record = waiting.pop(next_id)
                if self._log is not None:
                    self._log.append(record)
                self._cache[record["key"]] = record
                next_id += 1
                _warn_zero_spread(record)

    def close(self) -> None:
        """Stops the workers and closes the log (also on leaving a `with` block)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._log is not None:
                self._log.close()
        finally:
            if self._started:
                self.backend.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _warn_zero_spread(record: dict) -> None:
    """The API warns as zico_score does, here in the caller's process (a worker's warning would print
    on the worker's stderr, once per process), naming the candidate; the record holds it too."""
    for line in record.get("warnings") or ():
        if line.startswith(ZERO_SPREAD):
            warnings.warn(ZeroSpreadWarning(f"{record['arch']}: {line[len(ZERO_SPREAD) + 2:]}"), stacklevel=4)
