"""How well ZiCo (and #Params, FLOPs, other proxies) ranks architectures against a benchmark's
ground truth, scored on the run engine (the same log, seed rule and backend as the search).

Every sampled architecture is scored on each batch set (one per repeat); records are logged in task
order whatever order they arrive in, so a log does not depend on the workers or the backend, and a
rerun with the same settings resumes where it stopped. Failed candidates are logged and left out.
A row whose architecture (by `space.key`) was already scored on the same batch set is not scored
again: the score is a function of the key, the seed and the batches, so its record copies the first
one's values and names it in `cached_from` (benchmark files list one cell under several rows).
"""
from __future__ import annotations

import collections
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zico_fast.engine.evaluate import DEFAULT_PROXIES
from zico_fast.engine.backends import describe, make_backend
from zico_fast.engine.pool import Task, WorkerConfig
from zico_fast.engine.repro import check_device, check_threads, record as repro_record
from zico_fast.engine.run_log import RunLog, RunLogError, read_run_log, settings_changes
from zico_fast.engine.seeding import init_seed
from zico_fast.errors import ZiCoUserError
from zico_fast.ranking import rank_correlations, stability_summary, warn_if_few
from zico_fast.truth import Truth, check_column_dataset, default_truth_column, load_truth, resolve_truth, sample_rows


class CorrelateError(ZiCoUserError):
    """Arguments a correlation run cannot work with."""


@dataclass
class CorrelateResult:
    report: dict  # what report.json holds
    zico: list[float]  # first repeat's ZiCo per sampled row (NaN where it failed), for plots
    truth: list[float]
    records: list[dict]  # the log's records in task order


def correlate(space, batch_sets: Sequence, *, log_path, truth=None, truth_column: str | None = None,
              compare: Sequence[str] | None = None, sample: int | None = None, seed: int = 0, device="cpu",
              threads: int | None = None, workers: int = 1, backend=None, proxies=DEFAULT_PROXIES,
              progress: bool = False, report_only: bool = False, dataset: str = "cifar10") -> CorrelateResult:
    """Scores `sample` rows (None: all) of the ground-truth CSV `truth` on every batch set of
    `batch_sets` (several: a stability study over batch draws), logging each to `log_path`.
    `truth` None: the space's bundled table, or a bundled table's name (truth.BUNDLED_TABLES, e.g.
    "nb101-uniform"); `truth_column` None: that space's accuracy column for `dataset`, the data set
    the batches come from (a column of the other CIFAR data set is refused).

    report_only=True scores nothing: it reports on the rows a run with these settings has logged so
    far (the log is only read, so a run still writing it is not disturbed); the report says how many."""
    if not batch_sets or any(len(b) < 2 for b in batch_sets):
        raise CorrelateError("every batch set needs at least 2 batches (ZiCo measures how gradients vary "
                             "between batches)")
    device = check_device(device, on_this_machine=not getattr(backend, "remote", False))
    threads = check_threads(threads or 1)
    if isinstance(truth, Truth):
        table = truth
    else:
        column = truth_column or default_truth_column(space.name, dataset)
        table = load_truth(resolve_truth(truth, space.name), space, column, compare)
    check_column_dataset(table.column, dataset)
    rows = sample_rows(table.rows, sample, seed)
    indices = ",".join(str(r.arch_index) for r in rows)
    settings = {"space": space.settings(), "truth": {"column": table.column, "sha256": table.sha256},
                "seed": seed, "sample": sample, "rows": len(rows),
                "sample_sha256": hashlib.sha256(indices.encode()).hexdigest(), "repeats": len(batch_sets),
                "proxies": list(proxies), "bn_mode": "train",
                "repro": repro_record(device, threads, [b for s in batch_sets for b in s])}
    if report_only:
        return _report_logged(table, rows, space, settings, log_path)
    log = RunLog(log_path, "correlate", required=("id", "arch", "score"))
    logged = log.open(settings)
    seeds = {row.arch: init_seed(seed, space.key(row.arch)) for row in rows}  # hashed here, warm (see Task)
    tasks = [Task(rep * len(rows) + pos, row.arch, rep, seeds[row.arch])
             for rep in range(len(batch_sets)) for pos, row in enumerate(rows)]
    ids = {r["id"] for r in logged}
    if len(ids) < len(logged) or not ids <= set(range(len(tasks))):
        log.close()
        raise RunLogError(f"{log_path} has repeated or unknown record ids; `zico-fast salvage {log_path}` keeps "
                          "the first of each, then the same run resumes")
    records = sorted(logged, key=lambda r: r["id"])
    todo = [task for task in tasks if task.id not in ids]  # a salvage may have dropped some before the last
    backend = backend or make_backend(min(workers, max(1, len(todo))))
    wall = time.perf_counter()
    try:
        if todo:
            backend.start(WorkerConfig(space, [[(x.cpu(), y.cpu()) for x, y in s] for s in batch_sets], str(device),
                                       threads, seed, tuple(proxies)))
            log.describe_run(describe(backend))
            _score_in_order(backend, tasks, todo, rows, records, log, progress, space)
    finally:
        log.close()
        backend.close()
    records.sort(key=lambda r: r["id"])
    report = build_report(table, rows, records, space, settings)
    report["timings"]["wall_seconds_this_run"] = round(time.perf_counter() - wall, 2)
    report["resumed_records"], report["scored_this_run"] = len(logged), len(todo)
    report["complete"], report["rows_scored"], report["rows_total"] = True, len(rows), len(rows)
    zico = [_num(r["score"]) for r in records[:len(rows)]]
    return CorrelateResult(report, zico, [r.truth for r in rows], records)


def _report_logged(table: Truth, rows, space, settings: dict, log_path) -> CorrelateResult:
    # A long run's interim result: the rows are scored in file order, so the logged prefix is a fixed
    # subset of the rows chosen before any score was seen, and a resumed run only extends it.
    header, logged = read_run_log(log_path, required=("id", "arch", "score"))
    changes = settings_changes(header.get("settings", {}), settings)
    if changes:
        raise CorrelateError(f"{log_path} was written with other settings ("
                             + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:3])
                             + "); pass the arguments of the run that wrote it")
    if settings["repeats"] != 1:
        raise CorrelateError("report_only needs a single-repeat run (repeats=1)")
    logged = sorted(logged, key=lambda r: r["id"])
    done = 0  # the rows logged without a gap (a salvage may have dropped some; a resume redoes them)
    while done < min(len(logged), len(rows)) and logged[done]["id"] == done:
        done += 1
    if done < 2:
        raise CorrelateError(f"{log_path} holds {done} scored rows; at least 2 are needed for a report")
    report = build_report(table, rows[:done], logged[:done], space, {**settings, "rows": done})
    report["complete"] = done == len(rows)
    report["rows_scored"], report["rows_total"] = done, len(rows)
    zico = [_num(r["score"]) for r in logged[:done]]
    return CorrelateResult(report, zico, [r.truth for r in rows[:done]], logged[:done])


def _score_in_order(backend, tasks, todo, rows, records, log, progress, space) -> None:
    # A reorder buffer: records are logged in the order of `todo` (task order), so the log is the
    # same under any backend or completion order, and a resume only needs the ids logged.
    from tqdm.auto import tqdm

    first_of = {}  # (key, batch set) -> id of the task that scores it (the first with that network)
    for task in tasks:
        first_of.setdefault((space.key(task.arch), task.batch_set), task.id)
    fresh, copies = [], {}  # copies: id of the scoring task -> later tasks with the same network
    for task in todo:
        first = first_of[(space.key(task.arch), task.batch_set)]
        (fresh.append(task) if first == task.id else copies.setdefault(first, []).append(task))
    logged = {r["id"]: r for r in records}
    waiting, order = {}, collections.deque(task.id for task in todo)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), disable=not progress, unit="arch",
               desc="correlate")

    def ready(task, rec, cached_from=None):
        row = rows[task.id % len(rows)]
        waiting[task.id] = {"id": task.id, "arch_index": row.arch_index, "arch": task.arch,
                            "repeat": task.batch_set, **rec, "cached_from": cached_from}
        bar.update(1)

    def flush():  # log every record whose predecessors are all logged
        while order and order[0] in waiting:
            record = waiting.pop(order.popleft())
            log.append(record)
            records.append(record)

    for first in [f for f in copies if f in logged]:  # scored by an earlier run of this log
        for task in copies.pop(first):
            ready(task, {**_scored_part(logged[first]), "seconds": None}, first)
    for task, rec in backend.run(fresh):
        ready(task, rec)
        for copy in copies.pop(task.id, []):
            ready(copy, {**rec, "seconds": None}, task.id)
        flush()
    flush()  # copies of rows that an earlier run scored, after the last fresh record
    bar.close()


def _scored_part(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("id", "arch_index", "arch", "repeat", "cached_from")}


def _num(value) -> float:
    return math.nan if value is None else float(value)


def build_report(table: Truth, rows, records: list[dict], space, settings: dict) -> dict:
    truth = [r.truth for r in rows]
    n, repeats = len(rows), settings["repeats"]
    costs = [space.cost(r.arch) for r in rows]
    first = records[:n]
    correlations = {"zico": rank_correlations([_num(r["score"]) for r in first], truth),
                    "params": rank_correlations([c.params for c in costs], truth),
                    "flops": rank_correlations([c.flops for c in costs], truth)}
    for name in settings["proxies"]:  # further proxies computed in the same passes
        if name not in correlations:
            correlations[name] = rank_correlations([_num(r["values"].get(name)) for r in first], truth)
    for column in table.compare_columns:
        correlations[column] = rank_correlations([r.compare[column] for r in rows], truth)
    warn_if_few(correlations["zico"]["n"])
    from zico_fast.proxies.ensemble import members_for
    from zico_fast.proxies.evaluation import ensemble_and_top_of_ranking  # population columns of the proxies

    # top-k measures need at least 3 rows; below that the warning above has said enough
    members = members_for(settings["space"]["name"])
    ensemble, top_of_ranking = (ensemble_and_top_of_ranking(first, truth, costs, settings["proxies"], members)
                                if n >= 3 else (None, {}))
    if ensemble is not None:
        correlations["ensemble"] = ensemble
    seconds = [r["seconds"] for r in records if r.get("seconds") is not None] or [math.nan]
    report = {"n": n, "truth_column": table.column, "truth_file": Path(table.path).name,
              "truth_sha256": table.sha256, "settings": settings, "correlations": correlations,
              "compare_columns": table.compare_columns, "top_of_ranking": top_of_ranking,
              "cached_rows": sum(1 for r in records if r.get("cached_from") is not None),
              "failed": [{"arch_index": r["arch_index"], "repeat": r["repeat"], "error": r["error"]}
                         for r in records if r["score"] is None],
              "timings": {"scoring_seconds_total": round(float(np.nansum(seconds)), 2),
                          "seconds_per_arch_mean": round(float(np.nanmean(seconds)), 4),
                          "seconds_per_arch_median": round(float(np.nanmedian(seconds)), 4)}}
    if repeats > 1:
        runs = [[_num(r["score"]) for r in records[rep * n:(rep + 1) * n]] for rep in range(repeats)]
        report["stability"] = stability_summary(runs, truth, list(range(repeats)))
    return report
