"""More zero-cost proxies from ZiCo's own passes, and rank ensembles of them.

>>> from zico_fast.proxies import compute
>>> compute(model, batches, names="all", cost=space.cost(arch))   # {"zico": ..., "naswot": ..., ...}

See zico_fast/proxies/README.md for each proxy's definition, reference, passes and measured cost.
"""
from zico_fast.proxies.compute import compute
from zico_fast.proxies.ensemble import ENSEMBLE_MEMBERS, PopulationRanks, rank_aggregate
from zico_fast.proxies.registry import ALL, PROXIES, engine_names, resolve_names

__all__ = ["compute", "ALL", "PROXIES", "resolve_names", "engine_names", "rank_aggregate", "PopulationRanks",
           "ENSEMBLE_MEMBERS"]
