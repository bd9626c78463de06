"""Fuzz zico_score and ZiCo against the float64 oracle on random models, layouts, dtypes and data.

    nice .venv/bin/python scripts/fuzz.py --cases 1000 --out benchmarks/results/fuzz_1000.json
    nice .venv/bin/python scripts/fuzz.py --proxies all --cases 1000 --out benchmarks/results/fuzz_proxies_1000.json

Each case (fully determined by its seed) builds a random model: an NB201 or MobileNet-space
network at several resolutions, or a random module graph with unused branches, tied and frozen
weights; sometimes fp16/bf16 or channels_last, NaN/inf inputs, or a DataLoader of odd batch
sizes. It is scored by zico_score (restore on or off) or a ZiCo user loop, and checked:
  - crash:   cases run in a worker process; one that dies is recorded with its seed;
  - changed: parameters, buffers, .grad, modes, plain attributes and hooks are compared
             before/after (restore=False: parameters and hooks only);
  - wrong:   the score and per-layer terms must match the oracle on the same gradients, or the
             error/warning must be the expected one (non-finite gradients, zero spread, or the
             error the model's own plain forward/backward raises).
With --proxies (e.g. "all"), the scoring cases go through zico_fast.proxies.compute instead (a user
loop case is scored that way too), and every proxy must also be finite or NaN with a reason.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import zico_fast  # noqa: E402
from zico_fast.reference import gradient_stacks, zico_oracle  # noqa: E402
from zico_fast.proxies import compute, resolve_names  # noqa: E402
from fuzz_cases import cpu_layout_hazard, make_case  # noqa: E402

REL = 1e-4  # oracle agreement (float32 moments vs float64 oracle on the same gradients)


def snapshot(model: nn.Module) -> dict:
    plain = (bool, int, float, str, type(None))
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "attrs": [{k: v for k, v in m.__dict__.items() if isinstance(v, plain)} for m in model.modules()],
        "hooks": [(len(p._backward_hooks or {}), len(getattr(p, "_post_accumulate_grad_hooks", None) or {}))
                  for p in model.parameters()]
        + [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def changes(before: dict, after: dict, full: bool) -> list[str]:
    keys = ["params", "hooks"] + (["buffers", "grads", "attrs"] if full else [])
    out = []
    for key in keys:
        pairs = zip(before[key], after[key])
        if key in ("params", "buffers", "grads"):
            bad = [i for i, (a, b) in enumerate(pairs) if not _same(a, b)]
        else:
            bad = [i for i, (a, b) in enumerate(pairs) if a != b]
        if bad:
            out.append(f"{key} changed at {bad[:5]}")
    return out


class ProxyResult:
    """compute()'s values seen as a ZiCoResult (score, layer_terms) plus every proxy and its reasons."""

    def __init__(self, values: dict, details: dict):
        self.values, self.reasons = values, details["reasons"]
        self.score, self.layer_terms = values["zico"], details["layer_terms"]


def score(model, batches, desc, cost, proxies=()):
    if proxies:
        details = {}
        values = compute(model, batches, proxies, cost=cost, restore=desc["how"] == "score",
                         nonfinite=desc["nonfinite"], details=details)
        return ProxyResult(values, details)
    if desc["how"] == "user_loop":
        with zico_fast.ZiCo(model, nonfinite=desc["nonfinite"]) as zico:
            model.train()
            for x, y in batches:
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
        return zico.result()
    return zico_fast.zico_score(model, batches, restore=desc["how"] == "score", nonfinite=desc["nonfinite"])


def proxy_problems(result) -> list[str]:
    """Every proxy finite, or NaN with a reason (ZiCo's NaN too: nonfinite='nan')."""
    return [f"{name} = {value} without a reason" for name, value in result.values.items()
            if not (math.isfinite(value) or (math.isnan(value) and result.reasons.get(name)))]


def run_case(seed: int, proxies: tuple[str, ...] = ()) -> dict:
    desc, model, batches, cost = make_case(seed, proxies)
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = score(model, batches, desc, cost, proxies), None
        except Exception as exc:  # judged against the oracle below
            result, error = None, exc
    zero_warned = any(issubclass(w.category, zico_fast.ZeroSpreadWarning) for w in caught)
    problems = [] if desc["how"] == "user_loop" else changes(before, snapshot(model), desc["how"] == "score")
    if proxies and result is not None:
        problems += proxy_problems(result)
        desc["reasons"] = result.reasons
    oracle_model = model
    if cpu_layout_hazard(model):
        # A conv that hits torch's CPU channels_last defect: plain channels_last passes would corrupt
        # the heap, so the oracle runs on an NCHW copy. The scorer refused such models until it
        # learnt to run their passes in NCHW (issue 24); either answer is judged.
        if isinstance(error, zico_fast.ZiCoUserError) and "channels_last model" in str(error):
            return {**desc, "outcome": "expected_error", "problems": problems, "error": str(error)[:200]}
        oracle_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    try:
        want_score, want_terms = zico_oracle(stacks := gradient_stacks(oracle_model, batches))
        finite = all(bool(torch.isfinite(torch.from_numpy(s)).all()) for s in stacks.values())
    except Exception as exc:
        if error is None or type(error) is not type(exc):
            problems.append(f"plain passes raise {type(exc).__name__} but the scorer gave {error!r}")
        return {**desc, "outcome": "model_error", "problems": problems, "error": str(exc)[:200]}
    if len(batches) < 2:
        if not (isinstance(error, ValueError) and "at least 2 batches" in str(error)):
            problems.append(f"one batch gave {error!r} / {result}")
        outcome = "expected_error"
    elif not finite:
        expected = isinstance(error, zico_fast.NonFiniteGradientError) if desc["nonfinite"] == "raise" \
            else (result is not None and math.isnan(result.score))
        if not expected:
            problems.append(f"non-finite gradients gave {error!r} / {result and result.score}")
        outcome = "nonfinite_reported"
    elif error is not None:
        problems.append(f"unexpected {type(error).__name__}: {error}")
        outcome = "error"
    else:
        outcome = "scored"
        if not math.isclose(result.score, want_score, rel_tol=REL, abs_tol=1e-6):
            problems.append(f"score {result.score} vs oracle {want_score}")
        if result.layer_terms.keys() != want_terms.keys():
            problems.append(f"layers differ: {sorted(set(result.layer_terms) ^ set(want_terms))[:5]}")
        if not want_terms and not zero_warned:
            problems.append("zero score without a ZeroSpreadWarning")
    return {**desc, "outcome": outcome, "problems": problems}


def worker(start: int, end: int, proxies: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    for seed in range(start, end):
        print(json.dumps({"started": seed}), flush=True)
        t0 = time.perf_counter()
        record = run_case(seed, proxies)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        print(json.dumps(record), flush=True)


def run(start: int, cases: int, progress: bool = True, proxies: tuple[str, ...] = ()) -> list[dict]:
    """All cases in worker processes; a worker that dies is recorded as a crash and replaced."""
    records, seed, end = [], start, start + cases
    while seed < end:
        command = [sys.executable, __file__, "--worker", str(seed), str(end)]
        proc = subprocess.Popen(command + (["--proxies", ",".join(proxies)] if proxies else []),
                                stdout=subprocess.PIPE, text=True)
        current = None
        for line in proc.stdout:
            item = json.loads(line)
            if "started" in item:
                current = item["started"]
                continue
            records.append(item)
            seed, current = item["seed"] + 1, None
            if progress and item["problems"]:
                print(f"case {item['seed']}: {item['problems']}", file=sys.stderr)
        code = proc.wait()
        if current is not None or code != 0:
            crashed = current if current is not None else seed
            records.append({"seed": crashed, "outcome": "crash", "problems": [f"worker exited with {code}"]})
            seed = crashed + 1
    return records


def nan_reasons(records: list[dict]) -> dict[str, dict[str, int]]:
    """{proxy: {reason (numbers as #): cases}}: what made each proxy NaN across the run."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        for name, reason in r.get("reasons", {}).items():
            key = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", reason)
            out.setdefault(name, {})[key] = out.get(name, {}).get(key, 0) + 1
    return out


def tree_state() -> str:
    """The commit the run used, and the package files that differed from it (several people edit
    one checkout, so a run can see someone's uncommitted change)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "zico_fast").splitlines()]
    return git("rev-parse", "--short", "HEAD").strip() + (f" + uncommitted {dirty}" if dirty else "")


def summarise(records: list[dict], command: str, seconds: float, tree: str) -> dict:
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    failures = [r for r in records if r["problems"]]
    return {
        "command": command, "cases": len(records), "seconds": round(seconds, 1),
        "torch": torch.__version__, "tree": tree, "outcomes": outcomes,
        "crashes": outcomes.get("crash", 0),
        "models_changed": sum(any("changed" in p for p in r["problems"]) for r in records),
        "wrong_or_unexpected": sum(bool(r["problems"]) and r["outcome"] != "crash" for r in records),
        "proxy_nan_reasons": nan_reasons(records),
        "failures": failures[:50],
        "coverage": {key: sorted({str(r.get(key)) for r in records if key in r})
                     for key in ("kind", "size", "dtype", "how", "channels_last", "loader_batch", "poison",
                                                    "repeated")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Fuzz zico_fast against the float64 oracle.")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    parser.add_argument("--proxies", default="", help='also compute these proxies ("all" or a comma list)')
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    proxies = resolve_names(args.proxies) if args.proxies else ()
    if args.worker:
        return worker(*args.worker, proxies)
    t0, tree = time.perf_counter(), tree_state()  # the code the workers load
    records = run(args.start, args.cases, proxies=proxies)
    summary = summarise(records, " ".join(["scripts/fuzz.py"] + sys.argv[1:]), time.perf_counter() - t0, tree)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: summary[k] for k in ("cases", "seconds", "outcomes", "crashes", "models_changed",
                                              "wrong_or_unexpected")}))
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    main()
