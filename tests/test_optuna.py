"""The Optuna example with a real Optuna study: its sampler picks NB201 edge ops, its objective
values come from zico_fast.Scorer, and trials are asked and scored several at a time on two worker
processes. (Optuna is an optional extra: skipped where it is not installed.)"""
import importlib.util
from pathlib import Path

import pytest
import torch

from zico_fast.engine import score_candidate
from zico_fast.engine.repro import torch_settings
from zico_fast.spaces.nb201 import EDGES, NB201Space

optuna = pytest.importorskip("optuna")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "optuna_nb201.py"


def load_example():
    spec = importlib.util.spec_from_file_location("optuna_nb201", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_an_optuna_study_scores_its_trials_in_parallel_through_the_scorer(tmp_path):
    import zico_fast

    example = load_example()
    space = NB201Space(C=4, N=1, resolution=16)  # tiny networks on tiny synthetic batches: a fast test
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 10, (4,), generator=generator))
               for _ in range(2)]
    calls = []

    class RecordingScorer(zico_fast.Scorer):
        def score(self, archs):
            calls.append(len(archs))
            return super().score(archs)

    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=4)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with RecordingScorer(space, batches, workers=2, log=tmp_path / "scores.jsonl") as scorer:
        example.optimize(study, scorer, trials=10, parallel=4)
    assert calls == [4, 4, 2]  # asked and scored 4 trials at a time
    assert len(study.trials) == 10 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        assert set(trial.params) == {f"edge_{a}_{b}" for a, b in EDGES}
        arch = example.trial_arch(trial)
        nodes = space.canonical(arch).split("+")
        assert all(f"|{trial.params[f'edge_{a}_{b}']}~{b}|" in nodes[a - 1] for a, b in EDGES)
        with torch_settings(1):
            assert trial.value == score_candidate(space, arch, batches, 0, "cpu")["score"]  # the scorer's, exactly
    assert study.best_value == max(t.value for t in study.trials)
