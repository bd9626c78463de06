"""Rank correlations of a proxy with ground truth (Kendall tau-b, Spearman rho via scipy.stats),
and the stability of a ranking over several batch draws."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

FEW_ROWS = 10  # below this many finite pairs a rank correlation says little: warn


class FewRowsWarning(UserWarning):
    """A correlation computed on fewer than FEW_ROWS rows."""


def warn_if_few(n: int) -> None:
    """One warning for a report whose correlations rest on fewer than FEW_ROWS architectures."""
    if n < FEW_ROWS:
        warnings.warn(f"the rank correlations rest on only {n} architectures (fewer than {FEW_ROWS}), which is "
                      "mostly noise; score more rows", FewRowsWarning, stacklevel=3)


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict:
    """Kendall tau-b and Spearman rho (scipy.stats) of x against y over the pairs where both are finite.

    Returns {"kendall_tau", "kendall_p", "spearman", "spearman_p", "n"}; the statistics are NaN when
    fewer than 2 finite pairs remain or one side is constant.
    """
    from scipy import stats

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D sequences of the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    nan = {"kendall_tau": math.nan, "kendall_p": math.nan, "spearman": math.nan, "spearman_p": math.nan, "n": n}
    if n < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return nan
    tau = stats.kendalltau(a, b)  # tau-b: ties in either variable are accounted for
    rho = stats.spearmanr(a, b)  # Pearson correlation of average ranks
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman": float(rho.statistic), "spearman_p": float(rho.pvalue), "n": n}


def stability_summary(runs: list[list[float]], truth: Sequence[float], data_seeds: Sequence[int]) -> dict:
    """Across runs with different batch draws: each run's correlation with the truth, their spread,
    the pairwise rank agreement of the runs, and the correlation of the mean score."""
    per_run = [rank_correlations(run, truth) for run in runs]
    taus = np.array([c["kendall_tau"] for c in per_run])
    rhos = np.array([c["spearman"] for c in per_run])
    pairwise = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            c = rank_correlations(runs[i], runs[j])
            pairwise.append({"runs": [i, j], "data_seeds": [data_seeds[i], data_seeds[j]],
                             "kendall_tau": c["kendall_tau"], "spearman": c["spearman"], "n": c["n"]})
    pair_taus = np.array([p["kendall_tau"] for p in pairwise])
    mean_score = np.nanmean(np.array(runs, dtype=np.float64), axis=0)

    def spread(values: np.ndarray) -> dict:
        return {"min": float(np.min(values)), "max": float(np.max(values)), "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}

    return {"repeats": len(runs), "data_seeds": list(data_seeds),
            "per_run": [{"data_seed": s, **c} for s, c in zip(data_seeds, per_run)],
            "zico_kendall_tau": spread(taus), "zico_spearman": spread(rhos),
            "pairwise_between_runs": pairwise, "pairwise_kendall_tau": spread(pair_taus),
            "mean_score_vs_truth": rank_correlations(mean_score, truth),
            "std_note": "std uses ddof=1 (sample standard deviation over runs)"}
