"""How well a proxy ranks networks against ground truth: rank correlations and top-of-ranking scores.

A search keeps the networks a proxy ranks highest, so besides Kendall tau-b and Spearman rho over
all pairs we report two top-heavy scores at k = 10% of the rows:
- top-k hit rate: |top-k by proxy AND top-k by truth| / k;
- nDCG@k with gain = the network's truth percentile (rank / m in (0, 1]): DCG = sum over the proxy's
  top k of gain / log2(position + 1), divided by the same sum for the truth's own top k.
Missing or NaN proxy values rank lowest (as in the ensemble); pairs are never dropped.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr


def _clean(values: Sequence[float]) -> np.ndarray:
    return np.array([-math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v
                     for v in values], dtype=np.float64)


def ranking_quality(proxy: Sequence[float], truth: Sequence[float], top_fraction: float = 0.1) -> dict[str, float]:
    """{"kendall_tau", "spearman", "top10_hit", "ndcg10", "n"} of proxy against truth (higher = better)."""
    p, t = rankdata(_clean(proxy)), np.asarray(truth, dtype=np.float64)
    if len(p) != len(t) or len(p) < 3:
        raise ValueError(f"need equally long proxy and truth of at least 3 rows, got {len(p)} and {len(t)}")
    m = len(t)
    k = max(1, round(top_fraction * m))
    by_proxy = np.argsort(-p, kind="stable")[:k]
    by_truth = np.argsort(-t, kind="stable")[:k]
    gain = rankdata(t) / m
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    tag = f"{round(100 * top_fraction)}"
    return {"kendall_tau": float(kendalltau(p, t).statistic), "spearman": float(spearmanr(p, t).statistic),
            f"top{tag}_hit": len(set(by_proxy) & set(by_truth)) / k,
            f"ndcg{tag}": float((gain[by_proxy] * discount).sum() / (gain[by_truth] * discount).sum()),
            "n": m}


def ensemble_and_top_of_ranking(records: list[dict], truth: Sequence[float], costs, proxies: Sequence[str],
                                members: Sequence[str]) -> tuple[dict | None, dict]:
    """For a correlate run (first-repeat records in row order): the `ensemble` column's correlations
    with `members` (the space's default, members_for: what `--fitness ensemble` ranks by there; None
    unless every member was computed) and every column's top-10% hit rate and nDCG@10%."""
    from zico_fast.proxies.ensemble import rank_aggregate
    from zico_fast.ranking import rank_correlations

    def value(record, name):
        v = record.get("values", {}).get(name) if record.get("score") is not None else None
        return math.nan if v is None else float(v)

    columns = {"zico": [math.nan if r.get("score") is None else float(r["score"]) for r in records],
               "params": [c.params for c in costs], "flops": [c.flops for c in costs]}
    for name in proxies:
        columns.setdefault(name, [value(r, name) for r in records])
    ensemble = None
    if all(m in columns for m in members):
        columns["ensemble"] = list(rank_aggregate(columns, members))
        ensemble = {**rank_correlations(columns["ensemble"], truth), "members": list(members),
                    "aggregation": "sum over members of log(rank/m) over this run's rows (AZ-NAS)"}
    top = {}
    for name, values in columns.items():
        q = ranking_quality(values, truth)
        top[name] = {"top10_hit": q["top10_hit"], "ndcg10": q["ndcg10"]}
    return ensemble, top
