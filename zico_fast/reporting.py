"""The one module that writes result files: JSON and CSV first, figures last, so a plotting
failure (or a missing matplotlib) never costs a finished result; it becomes a warning."""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path

from zico_fast.plots import plotting_available, scatter_plot, search_plot

# candidates.csv: the fitness the search ranked by (named in fitness_name), ZiCo, the other proxies computed
# (after zico), then the candidate's cost and bookkeeping
SEARCH_COLUMNS = ["id", "arch", "fitness", "fitness_name", "zico", "flops", "params", "depth", "seconds", "error",
                  "cached_from", "discarded"]
# Published numbers (ZiCo paper, NATS-Bench-TSS CIFAR-10, all 15,625 networks), for the summary.
PAPER_CIFAR10 = {"zico": (0.61, 0.80), "params": (0.57, 0.75), "flops": (0.54, 0.73),
                 "naslib_nwot": (0.58, 0.77), "naslib_synflow": (0.54, 0.73),
                 "naslib_grad_norm": (0.46, 0.63), "naslib_snip": (0.46, 0.63)}


class PlotWarning(UserWarning):
    """A figure that could not be drawn; the results it would show are written."""


def json_safe(value):
    """NaN/inf become null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, obj) -> None:
    """Atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plot(draw, path: Path, *args) -> None:
    if not plotting_available():
        warnings.warn(f"{path.name} not drawn: matplotlib is missing (pip install 'zico_fast[plot]')", PlotWarning)
        return
    try:
        draw(path, *args)
    except Exception as error:  # a figure is never worth a finished result
        warnings.warn(f"{path.name} not drawn: {type(error).__name__}: {error}", PlotWarning)


def best_summary(result, data: dict | None = None) -> dict:
    cost = result.best_cost
    return {"arch": result.best_arch, "score": result.best_score if result.best_arch else None,
            "iteration": result.best_iteration, "params": cost.params if cost else None,
            "flops": cost.flops if cost else None, "depth": cost.depth if cost else None,
            "iterations": result.iterations, "scored": result.scored, "cached": result.cached,
            "failed": result.failed, "discarded": result.discarded,
            "top": [{"arch": a, "score": s} for a, s in result.population[:10]],
            "settings": result.settings, "data": data}


# The files a finished run writes beside its log, in writing order.
SEARCH_OUTPUTS = ("best.json", "candidates.csv", "search.png")
CORRELATE_OUTPUTS = ("report.json", "scores.csv", "summary.md", "scatter.png")


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Atomically, as write_json; a missing value (a failed candidate's) is an empty cell."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def search_table(result) -> tuple[list[str], list[dict]]:
    """candidates.csv's columns and rows: every logged candidate with the fitness the search ranked it
    by (ZiCo, or its rank-ensemble fitness against every candidate of the finished log, as the final
    population is ranked) and every proxy it computed."""
    proxies = [p for p in result.settings.get("proxies", ["zico"]) if p not in ("zico", "params", "flops")]
    kind = result.settings.get("fitness", {}).get("kind", "zico")
    fitness = [r["score"] for r in result.records]
    if kind == "ensemble":
        from zico_fast.proxies.ensemble import SearchFitness

        ensemble = SearchFitness(result.settings["fitness"]["members"])
        for record in result.records:  # as the search added them: fresh scored candidates, in log order
            if record["score"] is not None and record["cached_from"] is None:
                ensemble.add(record["values"])
        fitness = [None if r["score"] is None else ensemble.of(r["values"]) for r in result.records]
    columns = SEARCH_COLUMNS[:5] + proxies + SEARCH_COLUMNS[5:]
    rows = [{**r, "fitness": f, "fitness_name": kind, "zico": r["score"],
             **{p: r.get("values", {}).get(p) for p in proxies}} for r, f in zip(result.records, fitness)]
    return columns, rows


def correlate_table(result) -> tuple[list[str], list[dict]]:
    """scores.csv's columns and rows: one row per architecture correlated (the first batch set's
    record): arch_index, arch, truth, every proxy computed, error."""
    proxies = list(result.report["settings"]["proxies"])
    first = result.records[:len(result.truth)]
    rows = [{"arch_index": r["arch_index"], "arch": r["arch"], "truth": truth, "error": r["error"],
             **{p: r.get("values", {}).get(p) for p in proxies}} for r, truth in zip(first, result.truth)]
    return ["arch_index", "arch", "truth", *proxies, "error"], rows


def write_search_outputs(result, out: Path, data: dict | None = None) -> list[str]:
    """best.json, candidates.csv (one row per logged candidate), then search.png; returns the names."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "best.json", best_summary(result, data))
    _write_csv(out / "candidates.csv", *search_table(result))
    _plot(search_plot, out / "search.png", result.history, result.settings.get("strategy", ""), result.best_score)
    return list(SEARCH_OUTPUTS)


def write_correlate_outputs(result, out: Path, data: dict | None = None) -> list[str]:
    """report.json, scores.csv (one row per architecture) and summary.md, then scatter.png (scores.jsonl
    is the run's log, beside them)."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**result.report, "data": data}
    write_json(out / "report.json", report)
    _write_csv(out / "scores.csv", *correlate_table(result))
    tmp = out / "summary.md.tmp"
    tmp.write_text(summary_markdown(report), encoding="utf-8")
    os.replace(tmp, out / "summary.md")
    z = report["correlations"]["zico"]
    _plot(scatter_plot, out / "scatter.png", result.zico, result.truth, report["truth_column"],
          z["kendall_tau"], z["spearman"])
    return list(CORRELATE_OUTPUTS)


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _label(name: str) -> str:
    return {"zico": "**ZiCo (ours)**", "params": "#Params (ours)", "flops": "FLOPs (ours)"}.get(name, name)


def summary_markdown(report: dict) -> str:
    s, d = report["settings"], report.get("data") or {}
    # the paper's numbers are NB201's CIFAR-10 test accuracy; other tables get no such column
    with_paper = s["space"]["name"] == "nb201" and report["truth_column"] == "cifar10_test_acc"
    lines = [f"# ZiCo rank correlation: {s['space']['name']}, {report['truth_column']}", "",
             f"N = {report['n']} architectures (sample {s['sample'] if s['sample'] is not None else 'all'}, "
             f"seed {s['seed']}); {d.get('batches', '?')} batches of {d.get('batch_size', '?')} images "
             f"({d.get('source', '?')}, data seed {d.get('data_seed', '?')}); default init, BN in train mode; "
             f"device {s['repro']['device']}, {s['repro']['threads']} thread(s), torch {s['repro']['torch']}.", "",
             "| proxy | Kendall tau | Spearman | N |" + (" paper (NB201, all 15,625) tau / rho |" if with_paper else ""),
             "|---|---|---|---|" + ("---|" if with_paper else "")]
    if report.get("complete") is False:  # an interim report of a run still going (or stopped) part-way
        lines[2:2] = [f"**Partial run: {report['rows_scored']} of {report['rows_total']} rows scored so far** "
                      "(rows are scored in file order; rerunning the same command resumes the run).", ""]
    ordered = sorted(report["correlations"].items(),
                     key=lambda kv: -(kv[1]["kendall_tau"] if math.isfinite(kv[1]["kendall_tau"]) else -9))
    for name, c in ordered:
        paper = PAPER_CIFAR10.get(name)
        lines.append(f"| {_label(name)} | {_num(c['kendall_tau'])} | {_num(c['spearman'])} | {c['n']} |"
                     + (f" {f'{paper[0]:.2f} / {paper[1]:.2f}' if paper else ''} |" if with_paper else ""))
    if report["failed"]:
        lines += ["", f"{len(report['failed'])} score(s) failed or were not finite and are left out (report.json)."]
    st = report.get("stability")
    if st:
        k, p = st["zico_kendall_tau"], st["pairwise_kendall_tau"]
        lines += ["", f"## Stability over {st['repeats']} batch draws", "",
                  "| batch set | ZiCo Kendall tau | Spearman |", "|---|---|---|"]
        lines += [f"| {r['data_seed']} | {_num(r['kendall_tau'])} | {_num(r['spearman'])} |" for r in st["per_run"]]
        lines += ["", f"ZiCo Kendall tau vs truth: min {_num(k['min'])}, max {_num(k['max'])}, "
                  f"mean {_num(k['mean'])}, std {_num(k['std'], 4)} (ddof=1).",
                  f"Kendall tau between runs (pairwise): min {_num(p['min'])}, max {_num(p['max'])}, "
                  f"mean {_num(p['mean'])}."]
    t = report["timings"]
    reused = report.get("cached_rows", 0)
    lines += ["", f"Scoring: {_num(t['seconds_per_arch_mean'], 2)} s per architecture on average"
              + (f"; {reused} rows repeat an architecture already scored and copy its record." if reused else "."), ""]
    return "\n".join(lines)
