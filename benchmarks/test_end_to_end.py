"""Benchmarks 2 and 4: whole scoring runs against the bare forward/backward passes they need.

Group baseline: `bare` (N x zero_grad, forward, cross-entropy, backward on the same model and
batches); the ratio of `zico_score` to it is the scorer's overhead. `authors` is the authors'
per-candidate loop (per-layer host copies to numpy, np.std at the end), `reference` the
pure-PyTorch statistics.
"""
import pytest
import torch

import zico_fast
from workloads import MODELS, bare_passes
from zico_fast.data import make_batches
from zico_fast.reference import authors_zico_score, zico_score_reference


RUNNERS = {
    "bare": bare_passes,
    "zico_score": lambda model, batches: zico_fast.zico_score(model, batches),
    "zico_score_norestore": lambda model, batches: zico_fast.zico_score(model, batches, restore=False),
    "reference": zico_score_reference,
    "authors": authors_zico_score,
}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("num_batches", [2, 8])
@pytest.mark.parametrize("model_name", ["nb201-0.5M", "nb201-1.5M", "resnet18-11M"])
def test_end_to_end(benchmark, device, model_name, num_batches, runner):
    if device == "cpu" and model_name == "resnet18-11M" and num_batches == 8:
        pytest.skip("minutes per round on 2 CPU cores; the N=2 case shows the same ratio")
    batch_size = 128 if device == "cuda" else 64
    torch.manual_seed(0)
    model = MODELS[model_name]().to(device)
    batches = make_batches(batch_size=batch_size, num_batches=num_batches, device=device)

    def run():
        RUNNERS[runner](model, batches)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"end-to-end {device} {model_name} batch {batch_size} N={num_batches}"
    benchmark.extra_info["baseline"] = runner == "bare"
    benchmark.pedantic(run, rounds=5 if device == "cpu" else 20, warmup_rounds=1)
