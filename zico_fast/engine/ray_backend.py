"""Scoring on a Ray cluster: the Backend interface of pool.py with Ray actors as the workers.

Each actor receives the run's WorkerConfig once (space, batch sets, device, threads, seed, proxies),
moves the batches to its device once and then scores one candidate per call with the same
`score_candidate` as the local workers; the driver keeps the log and orders records by task id, so
a run logs the same records on any number of actors as on local processes with the same thread count.

Faults: an actor that dies inside a candidate (killed, a segfault, the OOM killer) is replaced and
the candidate goes to the next free actor; a candidate that kills an actor twice is recorded as
failed with the cause, so a native crash fails that candidate alone and nothing is lost or logged twice.
"""
from __future__ import annotations

import collections
import os
import signal
import socket
import threading

import torch

from zico_fast.engine.pool import (PoolError, WorkerConfig, failed_record, prepare_worker_process, score_task,
                                   send_order)
from zico_fast.errors import ZiCoUserError

ATTEMPTS = 2  # actor deaths a candidate may cause before it is recorded as failed
AHEAD = 1  # calls queued on an actor beyond the one it runs
START_TIMEOUT_S = 300.0  # actors must be up by then (a cluster without room for them never schedules them)


def _ray():
    try:
        import ray
    except ImportError:
        raise ZiCoUserError("the ray backend needs Ray: pip install 'zico_fast[ray]'") from None
    return ray


def _unreachable(address: str | None) -> str | None:
    """Why nothing listens at a host:port (or ray://host:port) address; None when something does,
    or for None and 'auto', which Ray resolves itself."""
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class _ScoringActor:
    """One scoring process on the cluster; holds the batches and torch settings of the run."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.state = prepare_worker_process(config)  # sets torch's threads: Ray's OMP_NUM_THREADS is not it

    def ready(self) -> dict:
        return {"pid": os.getpid(),
                "gpu": torch.cuda.get_device_name() if torch.device(self.config.device).type == "cuda" else None}

    def score(self, task) -> dict:
        return score_task(self.config, self.state, task)


class RayBackend:
    """`workers` Ray actors with `config.threads` CPUs each and `gpus_per_worker` of a GPU (a fraction
    such as 0.25 lets four small candidates share one device). `address`: a running cluster
    ("auto", "host:port" or "ray://host:10001"); None connects to the cluster this process already
    joined or starts a local one, which `close` stops again."""

    remote = True  # scores on the cluster's machines: the driver need not have the device

    def __init__(self, workers: int = 1, address: str | None = None, gpus_per_worker: float = 0.0):
        if not isinstance(workers, int) or workers < 1:
            raise ZiCoUserError(f"workers must be a positive integer, got {workers!r}")
        if gpus_per_worker < 0 or (gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker)):
            raise ZiCoUserError(f"gpus_per_worker (--gpus-per-worker) must be a fraction in [0, 1] or a whole number "
                                f"of GPUs, got {gpus_per_worker}")
        self.workers, self.address, self.gpus_per_worker = workers, address, float(gpus_per_worker)
        self.respawned, self._actors, self._started_ray, self._info = 0, [], False, {}

    def _connect(self):
        ray = _ray()
        if not ray.is_initialized():
            def unreachable(why) -> ZiCoUserError:
                return ZiCoUserError(f"cannot reach a Ray cluster at {self.address!r} ({why}); start one with "
                                     "`ray start --head` or leave out --ray-address")

            problem = _unreachable(self.address)
            if problem:  # ray.init would retry for minutes before it gave up
                raise unreachable(problem)
            stop = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as exc:
                raise unreachable(exc) from None
            finally:
                if callable(stop) and threading.current_thread() is threading.main_thread():
                    # ray.init replaces it with sys.exit; keep the handler the program chose (the CLI's clean stop)
                    signal.signal(signal.SIGTERM, stop)
            self._started_ray = self.address is None
        return ray

    def start(self, config: WorkerConfig) -> None:
        ray = self._connect()
        self.config, resources = config, ray.cluster_resources()
        need = {"CPU": self.workers * config.threads, "GPU": self.workers * self.gpus_per_worker}
        for kind, amount in need.items():
            if amount > resources.get(kind, 0) + 1e-9:
                raise ZiCoUserError(f"the Ray cluster has {resources.get(kind, 0):g} {kind}s but {self.workers} "
                                    f"workers need {amount:g}; use fewer --workers, --threads or --gpus-per-worker")
        if torch.device(config.device).type == "cuda" and self.gpus_per_worker == 0:
            raise ZiCoUserError("scoring on cuda with the ray backend needs --gpus-per-worker (e.g. 0.25: four "
                                "actors share a GPU), so Ray gives each actor a device")
        self._actor_class = ray.remote(num_cpus=config.threads, num_gpus=self.gpus_per_worker,
                                       max_restarts=0)(_ScoringActor)
        self._config_ref = ray.put(config)  # shipped to the object store once, read by every actor
        self._actors = [self._actor_class.remote(self._config_ref) for _ in range(self.workers)]
        ready = [a.ready.remote() for a in self._actors]
        done, waiting = ray.wait(ready, num_returns=len(ready), timeout=START_TIMEOUT_S)
        if waiting:
            raise PoolError(f"{len(waiting)} of {self.workers} Ray actors did not start in {START_TIMEOUT_S:.0f} s; "
                            "the cluster may lack the resources they ask for")
        try:
            started = ray.get(done)
        except ray.exceptions.RayError as exc:
            raise PoolError(f"a Ray scoring actor could not start: {str(exc).strip().splitlines()[-1]}") from None
        self.started_pids = [s["pid"] for s in started]  # the first actors' processes (monitoring, fault tests)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._info = {"kind": "ray", "ray": ray.__version__, "nodes": len(nodes),
                      "resources": {k: v for k, v in sorted(resources.items()) if k in ("CPU", "GPU")},
                      "workers": self.workers, "threads_per_worker": config.threads,
                      "gpus_per_worker": self.gpus_per_worker,
                      "gpus": sorted({s["gpu"] for s in started if s["gpu"]})}

    def describe(self) -> dict:
        """The cluster this run scored on (logged in a new log's header)."""
        return dict(self._info)

    def run(self, tasks):
        """As ProcessBackend.run: each actor holds the call it runs and AHEAD more, so its next
        candidate does not wait for the driver (an actor call's round trip is ~1.3 ms: RESULTS.md).
        An actor runs its calls in the order they were made, so its oldest call finishes first, and
        when it dies, its oldest is the candidate it died in: only that one counts the death; the
        calls queued behind it never ran and go back to the front of the queue."""
        ray = _ray()
        todo, deaths = collections.deque(tasks), collections.Counter()
        sent = {slot: collections.deque() for slot in range(len(self._actors))}  # (ref, task), oldest first
        while todo or any(sent.values()):
            for slot in send_order(sent, todo, AHEAD):
                task = todo.popleft()
                sent[slot].append((self._actors[slot].score.remote(task), task))
            owner = {ref: slot for slot, queue in sent.items() for ref, _ in queue}
            (ready,), _ = ray.wait(list(owner), num_returns=1)
            slot = owner[ready]
            ref, task = sent[slot].popleft()  # done too, if a later call of this actor is
            try:
                record = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                # the actor's process is gone: replace it; the candidate is tried again elsewhere
                ray.kill(self._actors[slot], no_restart=True)
                self._actors[slot] = self._actor_class.remote(self._config_ref)
                self.respawned += 1
                deaths[task.id] += 1
                todo.extendleft(reversed([queued for _, queued in sent[slot]]))
                sent[slot].clear()
                if deaths[task.id] < ATTEMPTS:
                    todo.appendleft(task)
                    continue
                reason = str(exc).strip().splitlines()[0][:200]
                record = failed_record(self.config, task,
                                       f"the scoring actor died {ATTEMPTS} times inside this candidate ({reason})")
            yield task, record

    def close(self) -> None:
        if not self._actors and not self._started_ray:
            return
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
