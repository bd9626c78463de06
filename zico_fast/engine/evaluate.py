"""The one candidate evaluation every command goes through: build under the seed rule, score on
the batches, return a record of plain values. A candidate's failure is its record, never raised,
and so is a ZeroSpreadWarning: a run prints one summary (zero_spread_summary), not one per network."""
from __future__ import annotations

import math
import time
import warnings

import torch

from zico_fast.engine.seeding import CandidateBuilder, build_seeded, init_seed
from zico_fast.scorer import ZeroSpreadWarning

DEFAULT_PROXIES = ("zico",)
ZERO_SPREAD = "zero_spread"  # the prefix of a ZeroSpreadWarning in a record's "warnings"


def evaluate(model: torch.nn.Module, batches, proxies=DEFAULT_PROXIES, *, cost=None, select_output=None,
             details: dict | None = None) -> dict[str, float]:
    """{proxy: value} of a built model on `batches` (ZiCo alone by default); the model is left as
    scoring left it. Non-finite values come back as NaN for the caller to judge. `details`, when
    given, receives ZiCo's per-layer terms and skipped layers."""
    if tuple(proxies) == ("zico",):  # the plain path: exactly zico_score
        from zico_fast.scorer import zico_score

        result = zico_score(model, batches, restore=False, nonfinite="nan", select_output=select_output)
        if details is not None:
            details.update(layer_terms=result.layer_terms, skipped=result.skipped, num_batches=result.num_batches)
        return {"zico": result.score}
    from zico_fast.proxies import compute

    return compute(model, batches, tuple(proxies), cost=cost, restore=False, nonfinite="nan",
                   select_output=select_output, details=details)


def score_candidate(space, arch: str, batches, seed: int, device, proxies=DEFAULT_PROXIES,
                    builder: CandidateBuilder | None = None, weights_seed: int | None = None) -> dict:
    """{"score", "values", "error", "warnings", "seconds", "init_seed"} of `arch`: `score` is ZiCo (None
    when the candidate failed or its ZiCo is not finite; `error` then says why); `warnings` lists a
    ZeroSpreadWarning as "zero_spread: <its message>" (other warnings are shown as usual); "reasons",
    present when a proxy is undefined, maps it to why (proxies.compute's details["reasons"]).
    `builder`: a worker's CandidateBuilder for this space, seed and device (default: a fresh
    build_seeded network).
    `weights_seed`: init_seed(seed, space.key(arch)), when the caller has it already."""
    start = time.perf_counter()
    values, error, caught, details = {}, None, [], {}
    if weights_seed is None:
        weights_seed = init_seed(seed, space.key(arch))
    try:
        model = builder.build(arch, weights_seed) if builder is not None else build_seeded(space, arch, seed, device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ZeroSpreadWarning)  # every candidate's, not the first per process
            values = evaluate(model, batches, proxies, cost=space.cost(arch), details=details)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        if "zico" in values and not math.isfinite(values["zico"]):
            error = f"non-finite ZiCo score {values['zico']} (an inf or NaN gradient)"
    except Exception as exc:  # any build or scoring failure is this candidate's, not the run's
        error = f"{type(exc).__name__}: {exc}"
        if builder is not None:
            builder.discard()  # whatever the failure left in a reused network goes with it
    score = values.get("zico") if error is None else None
    record = {"score": score, "values": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
              "error": error, "warnings": _recorded(caught),
              "seconds": round(time.perf_counter() - start, 6), "init_seed": weights_seed}
    if details.get("reasons"):  # why a proxy is undefined (None in values): the proxies' own words
        record["reasons"] = dict(details["reasons"])
    return record


def _recorded(caught: list) -> list[str]:
    """The record's lines for the ZeroSpreadWarnings in `caught`; any other warning is shown as it
    would have been outside the capture."""
    lines = []
    for w in caught:
        if issubclass(w.category, ZeroSpreadWarning):
            lines.append(f"{ZERO_SPREAD}: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return lines


def zero_spread_summary(records) -> str | None:
    """One line for a run's end: how many networks scored 0 for zero spread (None: none did)."""
    archs = {r["arch"] for r in records if any(w.startswith(ZERO_SPREAD) for w in r.get("warnings") or ())}
    if not archs:
        return None
    return (f"{len(archs)} network{'s' if len(archs) > 1 else ''} scored 0: every scored layer had zero gradient "
            "spread (their outputs ignore their inputs); see the records' warnings")
