"""Choosing and describing a run's scoring backend: local worker processes (pool.py), the calling
process, or Ray actors (ray_backend.py). Its own module, so pool.py and ray_backend.py (which builds
on pool.py's workers) do not import each other."""
from __future__ import annotations

from zico_fast.engine.pool import Backend, InProcessBackend, ProcessBackend
from zico_fast.engine.ray_backend import RayBackend
from zico_fast.errors import ZiCoUserError


def describe(backend) -> dict:
    """What a backend tells about where it scores (a custom backend without `describe`: its class)."""
    return backend.describe() if hasattr(backend, "describe") else {"kind": type(backend).__name__}


def make_backend(workers: int = 1, isolate: bool = True, kind: str = "local", ray_address: str | None = None,
                 gpus_per_worker: float = 0.0) -> Backend:
    """kind="local": worker processes (isolating native crashes), or the calling process when
    `isolate` is False and one worker is asked for. kind="ray": `workers` actors on the Ray cluster
    at `ray_address` (None: a local one), each with `gpus_per_worker` of a GPU."""
    if kind == "ray":
        return RayBackend(workers, ray_address, gpus_per_worker)
    if kind != "local":
        raise ZiCoUserError(f"backend must be 'local' or 'ray', not {kind!r}")
    if ray_address is not None or gpus_per_worker:
        raise ZiCoUserError("--ray-address and --gpus-per-worker belong to the ray backend; add --backend ray")
    if workers == 1 and not isolate:
        return InProcessBackend()
    return ProcessBackend(workers)
