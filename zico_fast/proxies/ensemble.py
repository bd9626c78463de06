"""Rank ensembles: AZ-NAS's aggregation of several proxies over a population of networks.

    ensemble(i) = sum over member proxies k of log(rank_k(i) / m)

rank_k(i) is network i's rank (1 = lowest value, ties share their average rank, as
scipy.stats.rankdata) among the m networks of the population, NaN counting as the lowest value.
0 is the best possible value (first on every member); it is a population statistic, so a network's
ensemble value depends on which other networks were scored.

In a search the population is the log: `PopulationRanks` holds the values of every candidate logged
so far, and a candidate's fitness is its aggregate against that frozen set. Because the log is kept
in candidate-index order, every fitness the search reads is a pure function of the log prefix: the
same after a resume, and independent of the order in which workers finish.
"""
from __future__ import annotations

import bisect
import math
from typing import Mapping, Sequence

import numpy as np

#: The default members, chosen BEFORE any report-half row was scored, by `greedy_members` on 90
#: fit-half NB201 dev rows (validation/results/nb201_proxies/dev_fit_subset.jsonl): NASWOT, ZiCo-BC and
#: AZ-NAS's four (expressivity, progressivity, trainability, complexity; params ranks NB201 exactly
#: as our FLOPs do). Fit-half tau 0.744 there; the report half is measured in validation/README.md.
ENSEMBLE_MEMBERS = ("naswot", "zico_bc", "expressivity", "progressivity", "params", "trainability")

#: Default members of the spaces where held-out rows support them (validation/README.md section 9);
#: a space joins only with measurements. darts: on the NB301 fit half,
#: cut 40 times (validation/scripts/selection_rules.py), the NB201 members unchanged transfer best
#: (0.381 Kendall on the unseen part, FLOPs in place of params 0.374, members chosen there by subsets
#: 0.358 or greedily 0.337, the best single proxy 0.322); the report half then gave them 0.349, above
#: every ensemble variant and every proxy but expressivity (0.356). nb101: there the NB201 members
#: do not transfer (0.456 on the unseen part; progressivity ranks NB101 backwards), and the best
#: subset chosen on the part shown does best (0.527; greedy 0.513, best single 0.454), so its choice
#: on the whole NB101 fit half (223 uniform rows) is the default.
SPACE_MEMBERS: dict[str, tuple[str, ...]] = {"nb201": ENSEMBLE_MEMBERS, "darts": ENSEMBLE_MEMBERS,
                                             "nb101": ("zico", "params", "expressivity", "trainability")}


class UnvalidatedEnsembleWarning(UserWarning):
    """The ensemble ranks a space whose members were never measured on its held-out rows."""


def members_for(space_name: str) -> tuple[str, ...]:
    """The default members on a space: its validated ones, else ENSEMBLE_MEMBERS with AZ-NAS's
    complexity term, FLOPs, for params. On NB201 the two rank every dev row alike (Kendall 1.0), so
    the choice made there stands as made; elsewhere they differ (Kendall of params vs FLOPs over 200
    networks, the first dev rows or seed-0 draws: NB101 0.997, DARTS 0.906, SSS 0.541, MobileNet 0.436).
    On DARTS, measured, params did better (SPACE_MEMBERS)."""
    if space_name in SPACE_MEMBERS:
        return SPACE_MEMBERS[space_name]
    return tuple("flops" if m == "params" else m for m in ENSEMBLE_MEMBERS)


def _key(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def rank_aggregate(columns: Mapping[str, Sequence[float]], members: Sequence[str] = ENSEMBLE_MEMBERS) -> np.ndarray:
    """The ensemble value of each network, from one column of values per member proxy."""
    from scipy.stats import rankdata  # scipy is optional for scoring and search; ranking needs it

    missing = [m for m in members if m not in columns]
    if missing:
        raise ValueError(f"the ensemble needs proxies {missing}; compute them too (or choose other members)")
    total = None
    for name in members:
        values = np.array([_key(v) for v in columns[name]], dtype=np.float64)
        part = np.log(rankdata(values) / len(values))
        total = part if total is None else total + part
    return total


class PopulationRanks:
    """Sorted values of each member proxy over the candidates logged so far (a search's population)."""

    def __init__(self, members: Sequence[str] = ENSEMBLE_MEMBERS):
        self.members = tuple(members)
        self._sorted: dict[str, list[float]] = {m: [] for m in self.members}
        self.size = 0

    def add(self, values: Mapping[str, float]) -> None:
        """Logs one candidate (call in log order)."""
        for m in self.members:
            bisect.insort(self._sorted[m], _key(values[m]))
        self.size += 1

    def fitness(self, values: Mapping[str, float]) -> float:
        """The aggregate of a logged candidate against the current population (rankdata's average
        rank for ties); for a candidate not yet logged, add() it first."""
        if self.size == 0:
            raise ValueError("the population is empty; add() candidates before asking for a fitness")
        total = 0.0
        for m in self.members:
            column, v = self._sorted[m], _key(values[m])
            below, upto = bisect.bisect_left(column, v), bisect.bisect_right(column, v)
            if upto == below:
                raise ValueError(f"value {v!r} of {m!r} is not in the population; add() the candidate first")
            rank = below + (upto - below + 1) / 2
            total += math.log(rank / self.size)
        return total


def greedy_members(columns: Mapping[str, Sequence[float]], truth: Sequence[float],
                   candidates: Sequence[str], min_gain: float = 0.005) -> list[tuple[tuple[str, ...], float]]:
    """Forward selection of ensemble members by Kendall tau against `truth` (use FIT rows only).

    Starts from the best single proxy and adds, one at a time, the candidate that raises tau most;
    stops when no addition gains `min_gain`. Returns the path [(members, tau), ...]; the last entry
    is the choice. Deterministic: ties go to the earlier candidate.
    """
    from scipy.stats import kendalltau

    def tau(members) -> float:
        return float(kendalltau(rank_aggregate(columns, members), truth).statistic)

    chosen: tuple[str, ...] = ()
    path: list[tuple[tuple[str, ...], float]] = []
    best = -math.inf
    while True:
        trials = [(tau(chosen + (c,)), i, c) for i, c in enumerate(candidates) if c not in chosen]
        if not trials:
            break
        score, _, pick = max(trials, key=lambda t: (t[0], -t[1]))
        if chosen and score < best + min_gain:
            break
        chosen, best = chosen + (pick,), score
        path.append((chosen, score))
    return path


class SearchFitness:
    """A search's ensemble fitness: each scored candidate joins the population of ranks in log
    order; a member's fitness is its aggregate against everything logged so far (AZ-NAS's search
    re-ranks its whole history the same way). Replaying a log rebuilds it exactly."""

    def __init__(self, members: Sequence[str] = ENSEMBLE_MEMBERS):
        self.ranks = PopulationRanks(members)

    @property
    def members(self) -> tuple[str, ...]:
        return self.ranks.members

    def add(self, values: Mapping[str, float | None]) -> None:
        self.ranks.add({m: math.nan if values.get(m) is None else values[m] for m in self.members})

    def of(self, values: Mapping[str, float | None]) -> float:
        return self.ranks.fitness({m: math.nan if values.get(m) is None else values[m] for m in self.members})
