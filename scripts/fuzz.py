"""Fuzz zico_score and ZiCo against the float64 oracle on random models, layouts, dtypes and data.

    nice .venv/bin/python scripts/fuzz.py --cases 1000 --out benchmarks/results/fuzz_1000.json

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
"""
from __future__ import annotations

import argparse
import json
import math
import random
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
from zico_fast.spaces import get_space  # noqa: E402

REL = 1e-4  # oracle agreement (float32 moments vs float64 oracle on the same gradients)


class RandomGraph(nn.Module):
    """Convs (plain, strided, depthwise) with optional BN and parallel branches, an unused
    branch, weights tied across same-shape convs, frozen weights, and a dead (zero-scaled) path."""

    def __init__(self, rng: random.Random, classes: int):
        super().__init__()
        width = rng.choice([4, 6, 8])
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks, self.branches = nn.ModuleList(), nn.ModuleList()
        for _ in range(rng.randint(1, 4)):
            stride, kernel = rng.choice([1, 1, 2]), rng.choice([1, 3])
            groups = rng.choice([1, width])
            layers = [nn.Conv2d(width, width, kernel, stride, kernel // 2, groups=groups, bias=rng.random() < 0.5)]
            if rng.random() < 0.6:
                layers.append(nn.BatchNorm2d(width, affine=rng.random() < 0.7))
            self.blocks.append(nn.Sequential(*layers, nn.ReLU()))
            self.branches.append(nn.Conv2d(width, width, 1, stride) if rng.random() < 0.4 else nn.Identity())
        self.unused = nn.Conv2d(width, width, 3)
        self.dead = nn.Linear(width, classes) if rng.random() < 0.2 else None
        self.head = nn.Linear(width, classes)
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d) and m is not self.unused]
        if rng.random() < 0.4:
            a, b = rng.sample(convs, 2) if len(convs) > 1 else (convs[0], convs[0])
            if a.weight.shape == b.weight.shape and a.groups == b.groups:
                b.weight = a.weight
        if rng.random() < 0.3:
            rng.choice(convs).weight.requires_grad_(False)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for block, branch in zip(self.blocks, self.branches):
            x = block(x) + (branch(x) if not isinstance(branch, nn.Identity) else 0)
        x = x.mean((2, 3))
        out = self.head(x)
        return out + 0 * self.dead(x) if self.dead is not None else out


def make_case(seed: int):
    """(description, model, batches, how to score) for one seed."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    kind = rng.choices(["nb201", "mobilenet", "graph"], [4, 2, 4])[0]
    classes = 10
    if kind == "nb201":
        space = get_space("nb201", C=rng.choice([4, 8, 16]), N=rng.choice([1, 1, 2, 5]))
        model, size = space.build(space.random(rng)), rng.choice([8, 16, 16, 32])
    elif kind == "mobilenet":
        space = get_space("mobilenet", num_classes=classes)
        model, size = space.build(space.random(rng)), rng.choices([32, 64, 96, 224], [10, 5, 2, 1])[0]
    else:
        model, size = RandomGraph(rng, classes), rng.choice([5, 8, 12])
    desc = {"seed": seed, "kind": kind, "size": size}
    dtype = rng.choices([torch.float32, torch.bfloat16, torch.float16], [8, 1, 1])[0]
    if dtype != torch.float32:
        model = model.to(dtype)
    if rng.random() < 0.2:
        model = model.to(memory_format=torch.channels_last)
        desc["channels_last"] = True
    if rng.random() < 0.2:
        model.eval()  # the scorer must use train mode and hand eval mode back
    num_batches = rng.choices([2, 3, 5], [6, 2, 1])[0]
    batch = rng.choice([2, 3, 4]) if size < 96 else 2
    x = torch.randn(num_batches * batch, 3, size, size).to(dtype)
    y = torch.randint(0, classes, (num_batches * batch,))
    poison = rng.random() < 0.1
    if poison:
        x[rng.randrange(len(x)), 0, 0, 0] = rng.choice([math.nan, math.inf])
    if rng.random() < 0.15:  # a DataLoader with an odd batch size and a short last batch
        odd = rng.choice([3, 5])
        batches = list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=odd))
        desc["loader_batch"] = odd
    else:
        batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(num_batches)]
    if rng.random() < 0.05:  # the same batch values twice: zero spread, which must be reported
        batches = [batches[0], (batches[0][0].clone(), batches[0][1].clone())]
        desc["repeated"] = True
    how = rng.choices(["score", "score_norestore", "user_loop"], [6, 2, 2])[0]
    if how == "user_loop" and cpu_layout_hazard(model):
        how = "score"  # the user's own passes would crash inside torch; zico_score must refuse
    desc.update(dtype=str(dtype).split(".")[-1], batches=len(batches), how=how, poison=poison,
                nonfinite=rng.choice(["raise", "nan"]), params=sum(p.numel() for p in model.parameters()))
    return desc, model, batches


def snapshot(model: nn.Module) -> dict:
    plain = (bool, int, float, str, type(None))
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "attrs": [{k: v for k, v in m.__dict__.items() if isinstance(v, plain)} for m in model.modules()],
        "hooks": [(len(p._backward_hooks or {}), len(getattr(p, "_post_accumulate_grad_hooks", None) or {}))
                  for p in model.parameters()] + [len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()],
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


def cpu_layout_hazard(model) -> bool:
    """A channels_last model with a strided 1x1 conv: torch's own CPU backward corrupts memory
    there (zico_score refuses it with a clear error; a user loop would crash in torch itself)."""
    return zico_fast.model_state.ModelPlan.build(model, None).cpu_layout_hazard() is not None


def score(model, batches, desc):
    if desc["how"] == "user_loop":
        with zico_fast.ZiCo(model, nonfinite=desc["nonfinite"]) as zico:
            model.train()
            for x, y in batches:
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
        return zico.result()
    return zico_fast.zico_score(model, batches, restore=desc["how"] == "score", nonfinite=desc["nonfinite"])


def run_case(seed: int) -> dict:
    desc, model, batches = make_case(seed)
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = score(model, batches, desc), None
        except Exception as exc:  # judged against the oracle below
            result, error = None, exc
    zero_warned = any(issubclass(w.category, zico_fast.ZeroSpreadWarning) for w in caught)
    problems = [] if desc["how"] == "user_loop" else changes(before, snapshot(model), desc["how"] == "score")
    if cpu_layout_hazard(model):  # the oracle's plain passes would crash: the refusal is the answer
        if not (isinstance(error, zico_fast.ZiCoUserError) and "channels_last model" in str(error)):
            problems.append(f"channels_last strided 1x1 conv on CPU gave {error!r} instead of a refusal")
        return {**desc, "outcome": "expected_error", "problems": problems, "error": str(error)[:200]}
    try:
        want_score, want_terms = zico_oracle(stacks := gradient_stacks(model, batches))
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


def worker(start: int, end: int) -> None:
    torch.set_num_threads(1)
    for seed in range(start, end):
        print(json.dumps({"started": seed}), flush=True)
        t0 = time.perf_counter()
        record = run_case(seed)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        print(json.dumps(record), flush=True)


def run(start: int, cases: int, progress: bool = True) -> list[dict]:
    """All cases in worker processes; a worker that dies is recorded as a crash and replaced."""
    records, seed, end = [], start, start + cases
    while seed < end:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(seed), str(end)],
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


def summarise(records: list[dict], command: str, seconds: float) -> dict:
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    failures = [r for r in records if r["problems"]]
    return {
        "command": command, "cases": len(records), "seconds": round(seconds, 1),
        "torch": torch.__version__, "outcomes": outcomes,
        "crashes": outcomes.get("crash", 0),
        "models_changed": sum(any("changed" in p for p in r["problems"]) for r in records),
        "wrong_or_unexpected": sum(bool(r["problems"]) and r["outcome"] != "crash" for r in records),
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
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    t0 = time.perf_counter()
    records = run(args.start, args.cases)
    summary = summarise(records, " ".join(["scripts/fuzz.py"] + sys.argv[1:]), time.perf_counter() - t0)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: summary[k] for k in ("cases", "seconds", "outcomes", "crashes", "models_changed",
                                              "wrong_or_unexpected")}))
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    main()
