"""The one reproducibility record: everything besides (arch, seed, batches) that changes a score.

Scores depend, at the level of float rounding, on the intra-op thread count, cuDNN's algorithm
choice, TF32 and the torch build. Every run applies the same settings (`torch_settings`) and logs
`record(...)` in its header, so a resume with any difference is refused with the difference named.
"""
from __future__ import annotations

import contextlib
import hashlib

import torch

from zico_fast.errors import ZiCoUserError


def check_device(device, on_this_machine: bool = True) -> torch.device:
    """`device` as a torch.device, or a clear error when this machine does not have it.
    on_this_machine=False (scoring on a cluster's workers) checks only the spelling."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ZiCoUserError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda[:N]'") from None
    if not on_this_machine:
        return dev
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available()}
    if not available.get(dev.type, False):
        raise ZiCoUserError(f"device {device!r} is not available on this machine; use 'cpu'"
                            + (" or 'cuda'" if torch.cuda.is_available() else ""))
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ZiCoUserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def batch_fingerprint(batches) -> dict:
    """sha256 of every input and target byte, and the shapes: names the data a score was taken on."""
    digest = hashlib.sha256()
    for x, y in batches:
        for t in (x, y):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": digest.hexdigest(), "shapes": [[list(x.shape), list(y.shape)] for x, y in batches]}


def record(device, threads: int, batches) -> dict:
    """The reproducibility record logged in every run's header (and in score's report)."""
    dev = torch.device(device)
    rec = {"torch": torch.__version__.split("+")[0], "device": dev.type, "threads": threads,
           "cudnn_deterministic": True, "cudnn_benchmark": False}
    if dev.type == "cuda":  # TF32 convolutions (cuDNN's default) give other scores than float32
        rec["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
        # a driver without a GPU (the workers of a cluster score) has no name to give; the log's
        # header names the workers' GPUs under "backend"
        rec["gpu"] = torch.cuda.get_device_name(dev) if torch.cuda.is_available() else None
    rec["batches"] = batch_fingerprint(batches)
    return rec


@contextlib.contextmanager
def torch_settings(threads: int):
    """Thread count and deterministic cuDNN for the duration; the caller's settings come back after."""
    saved = torch.get_num_threads(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def check_threads(threads) -> int:
    if threads is None:
        return torch.get_num_threads()
    if not isinstance(threads, int) or threads < 1:
        raise ZiCoUserError(f"threads must be a positive integer, got {threads!r}")
    return threads
