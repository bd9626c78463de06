"""Shared test helpers: the devices to test on, running the kernels on given gradient lists, and run
log records compared without their timings."""
import numpy as np
import pytest
import torch

import zico_fast
from zico_fast.engine import read_run_log
from zico_fast.reference import zico_oracle
from zico_fast.stats import GradientStatistics

# CUDA is tested wherever a GPU exists and this build has the CUDA kernels; skipped only there.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and zico_fast.has_cuda_kernels() else [])
GRAD_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def kernel_ratio_sums(per_batch: list[list[torch.Tensor]], pair_is_final: bool = False) -> list[float]:
    """Feeds per_batch[n][i] (gradient of tensor i in batch n) through GradientStatistics."""
    num_tensors = len(per_batch[0])
    stats = GradientStatistics(num_tensors, num_batches=len(per_batch) if pair_is_final else None)
    for grads in per_batch:
        for i, g in enumerate(grads):
            stats.add(i, g)
        stats.end_batch()
    sums = stats.ratio_sums(list(range(num_tensors)))
    return [float(sums[i]) for i in range(num_tensors)]


def oracle_ratio_sums(per_batch: list[list[torch.Tensor]]) -> list[float]:
    """The float64 oracle's per-tensor ratio sums (exp of its layer terms; 0 for empty layers)."""
    out = []
    for i in range(len(per_batch[0])):
        stack = np.stack([g[i].float().cpu().reshape(-1).numpy() for g in per_batch])
        _, terms = zico_oracle({"t": stack})
        out.append(float(np.exp(terms["t"])) if "t" in terms else 0.0)
    return out


def random_gradients(shapes, num_batches, dtype=torch.float32, device="cpu", mean_over_std=1.0, seed=0):
    """Gradients g = mu + sigma * z with a per-element mu, so |mean|/std is about mean_over_std."""
    gen = torch.Generator().manual_seed(seed)
    mus = [torch.randn(s, generator=gen, dtype=torch.float64) * mean_over_std for s in shapes]
    return [[(mu + torch.randn(mu.shape, generator=gen, dtype=torch.float64)).mul(1e-3).to(device=device, dtype=dtype)
             for mu in mus] for _ in range(num_batches)]


def without_timings(records: list[dict]) -> list[dict]:
    """Run log records minus `seconds`, the one field that differs between two runs of the same work."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def logged_without_timings(path) -> list[dict]:
    """The records of the run log at `path`, minus their timings."""
    return without_timings(read_run_log(path)[1])


@pytest.fixture
def one_thread():
    """One torch thread for a test (a module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`
    after importing it): far faster than two when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
