"""The one reproducibility record: everything besides (arch, seed, batches) that changes a score.

Scores depend, at the level of float rounding, on the intra-op thread count, the memory layout of
the passes, cuDNN's algorithm choice, TF32 and the torch build. Every run applies the same settings
(`torch_settings`) and logs `record(...)` in its header, so a resume with any difference is refused
with the difference named. The machine (CPU model, the instruction set oneDNN's kernels use, GPU)
changes scores by rounding too, but it is a fact, not a setting: `machine()` is logged beside the
record and a resume on another machine type warns instead of refusing.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

from zico_fast.errors import ZiCoUserError
from zico_fast.layout import layout_of


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
    """The reproducibility record logged in every run's header (and in score's report). The layout
    is the batches' (zico_fast.layout); a contiguous one is left out, as logs from before layouts
    were recorded left it out, so they resume with `--layout contiguous`."""
    dev = torch.device(device)
    rec = {"torch": torch.__version__.split("+")[0], "device": dev.type, "threads": threads,
           "cudnn_deterministic": True, "cudnn_benchmark": False}
    if layout_of(batches) != "contiguous":
        rec["layout"] = layout_of(batches)
    if dev.type == "cuda":  # TF32 convolutions (cuDNN's default) give other scores than float32
        rec["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    rec["batches"] = batch_fingerprint(batches)
    return rec


def machine(device) -> dict:
    """What the machine scoring here is: CPU model (/proc/cpuinfo), the instruction set of torch's
    CPU kernels, oneDNN's cap on it if set (ONEDNN_MAX_CPU_ISA), and the GPU's name on a CUDA run.
    A driver without a GPU (a cluster's workers score) names none; the log's header names the
    workers' GPUs under "backend"."""
    facts = {"cpu": _cpu_model(), "cpu_isa": torch.backends.cpu.get_cpu_capability()}
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        facts["onednn_max_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    if torch.device(device).type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


class OtherMachineWarning(UserWarning):
    """A run resumed on another machine type than it started on (its scores may differ by rounding)."""


def other_machine_warning(logged: dict | None, here: dict) -> str | None:
    """The one line for a run that resumes on another machine type than it started on (None if the
    same, or the log predates machine facts): new scores may differ from the logged ones by rounding."""
    if not logged or logged == here:
        return None
    changed = ", ".join(f"{k}: {logged.get(k)!r} -> {here.get(k)!r}" for k in sorted(set(logged) | set(here))
                        if logged.get(k) != here.get(k))
    return (f"this run resumes on another machine type ({changed}); scores from here on may differ from the "
            "logged ones by float rounding (about 1e-4 relative), so rankings can shift slightly")


def warn_if_other_machine(logged: dict | None, here: dict) -> None:
    line = other_machine_warning(logged, here)
    if line is not None:
        warnings.warn(OtherMachineWarning(line), stacklevel=3)
