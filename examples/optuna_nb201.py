"""An Optuna study searches NAS-Bench-201: its sampler picks the 6 edge ops, zico_fast.Scorer
gives each trial its ZiCo score, several trials at a time in parallel on the scorer's workers.

    pip install 'zico_fast[optuna]'
    python examples/optuna_nb201.py --trials 64 --parallel 8 --workers 2 --log optuna_scores.jsonl

Rerunning with the same --log scores none of the architectures it already holds (Optuna's own
study is in memory here; give it a storage to resume the study too).
"""
from __future__ import annotations

import argparse

import optuna

import zico_fast
from zico_fast.data import make_batches
from zico_fast.spaces.nb201 import EDGES, OPS, NB201Space


def trial_arch(trial: optuna.trial.BaseTrial) -> str:
    """The NB201 string of the ops a trial picks, one per edge (to node, from node)."""
    ops = {edge: trial.suggest_categorical(f"edge_{edge[0]}_{edge[1]}", OPS) for edge in EDGES}
    return "+".join("|" + "|".join(f"{ops[(node, source)]}~{source}" for source in range(node)) + "|"
                    for node in (1, 2, 3))


def optimize(study: optuna.Study, scorer: zico_fast.Scorer, trials: int, parallel: int) -> None:
    """Asks `parallel` trials, scores their architectures in one scorer.score call (spread over the
    scorer's workers), tells each trial its ZiCo score; a candidate that fails is a failed trial."""
    while len(study.trials) < trials:
        asked = [study.ask() for _ in range(min(parallel, trials - len(study.trials)))]
        for trial, record in zip(asked, scorer.score([trial_arch(t) for t in asked])):
            if record["score"] is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, record["score"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8, help="trials asked and scored together")
    parser.add_argument("--workers", type=int, default=2, help="scoring processes")
    parser.add_argument("--log", default=None, help="the scorer's run log (a rerun re-scores nothing in it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    batches = make_batches(None, 64, 2, args.seed)  # the bundled CIFAR-10 images
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    with zico_fast.Scorer(NB201Space(), batches, workers=args.workers, log=args.log, seed=args.seed) as scorer:
        optimize(study, scorer, args.trials, args.parallel)
    print(f"best of {len(study.trials)} trials: ZiCo {study.best_value:.3f}\n{trial_arch(study.best_trial)}")


if __name__ == "__main__":
    main()
