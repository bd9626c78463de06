"""`zico-fast correlate`: how well ZiCo ranks architectures against a benchmark's ground truth.

Scores a sample of a space's architectures with the paper's settings (2 batches of 128 real images,
default initialisation, train mode), then reports Kendall tau and Spearman rho (scipy.stats) of ZiCo,
of #Params and FLOPs computed from the space, and of any other proxies' columns of the truth file,
all against the same ground truth on the same architectures.

    zico-fast correlate --space nb201 --truth nb201_dev.csv --out runs/nb201 [--sample 100 --seed 0]

Outputs in --out: report.json, scores.csv, summary.md, scatter.png, and scores.jsonl, the append-only
record of every score (the first line holds the settings; each later line one architecture and
repeat, written with flush+fsync).  A rerun with the same settings continues where it stopped and
never rescores; a truncated last line (a kill mid-write) is dropped and rescored.

`--repeats R` scores the same sample with R batch draws (data seeds data_seed .. data_seed+R-1, the
initialisation unchanged) and adds a "stability" section: the pairwise Kendall tau between the runs'
scores and the spread of ZiCo's Kendall tau against the ground truth.

Reproducibility: each network is initialised from torch.manual_seed(arch_seed(seed, arch_index)), a
hash of the seed and the architecture's index, so a score does not depend on the sample, the order
or the worker that computed it.  It does depend, at the level of float rounding, on the number of
intra-op threads (convolution reductions are split differently, and ZiCo's per-element ratios are
heavy-tailed: see validation/README.md); each record keeps its thread count, and a resume must use the
same count.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from zico_fast.jsonl_log import AppendLog, read_lines, settings_changes

SETTINGS_VERSION = 1
BUNDLED_TRUTH = Path(__file__).parent / "data" / "nb201_dev.csv"
DEFAULT_TRUTH_COLUMN = "cifar10_test_acc"
COMPARE_PREFIX = "naslib_"
# Measured on the 2-core development machine (validation/workers_benchmark.json): two processes with
# one intra-op thread each score NB201 nets at batch 128 faster than one process with two threads.
DEFAULT_THREADS_PER_WORKER = 1

# Published numbers (ZiCo paper, NATS-Bench-TSS CIFAR-10, all 15,625 networks), for the summary.
PAPER_CIFAR10 = {"zico": (0.61, 0.80), "params": (0.57, 0.75), "flops": (0.54, 0.73),
                 "naslib_nwot": (0.58, 0.77), "naslib_synflow": (0.54, 0.73),
                 "naslib_grad_norm": (0.46, 0.63), "naslib_snip": (0.46, 0.63)}


class CorrelateError(Exception):
    """A problem with the inputs or the output folder, reported as one line (exit status 2)."""


# ---------------------------------------------------------------------------------------------
# Rank correlations
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------
@dataclass
class TruthRow:
    arch_index: int
    arch: str  # canonical spelling
    truth: float
    compare: dict[str, float] = field(default_factory=dict)
    line: int = 0


@dataclass
class Truth:
    path: Path
    column: str
    compare_columns: list[str]
    rows: list[TruthRow]
    sha256: str


def _parse_float(text: str, what: str, line: int, path: Path, allow_empty: bool) -> float:
    stripped = (text or "").strip()
    if not stripped and allow_empty:
        return math.nan
    try:
        value = float(stripped)
    except ValueError:
        raise CorrelateError(f"{path}:{line}: {what} is {text!r}, not a number") from None
    if not allow_empty and not math.isfinite(value):
        raise CorrelateError(f"{path}:{line}: {what} is {text!r}; the ground truth must be a finite number")
    return value


def load_truth(path: str | Path, space, truth_column: str = DEFAULT_TRUTH_COLUMN,
               compare: Sequence[str] | None = None) -> Truth:
    """Reads and checks a ground-truth CSV: columns arch_index, arch_string and `truth_column`.

    Every arch_string must be valid in `space` and (where the space numbers its architectures) name
    the architecture its arch_index says.  `compare`: columns holding other proxies' scores (None:
    every column starting with "naslib_"); an empty cell there is a missing score (NaN), text is an
    error.  Raises CorrelateError with the file, line and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CorrelateError(f"truth file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorrelateError(f"{path} is not a UTF-8 CSV file ({error})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise CorrelateError(f"{path} is empty; expected a CSV header with arch_index, arch_string, {truth_column}")
    reader.fieldnames = header
    missing = [c for c in ("arch_index", "arch_string", truth_column) if c not in header]
    if missing:
        raise CorrelateError(f"{path} lacks column(s) {', '.join(missing)}; its columns are: {', '.join(header)}")
    if compare is None:
        compare_columns = [c for c in header if c.startswith(COMPARE_PREFIX)]
    else:
        compare_columns = [c for c in compare if c]
        unknown = [c for c in compare_columns if c not in header]
        if unknown:
            raise CorrelateError(f"--compare column(s) {', '.join(unknown)} not in {path}; its columns are: "
                                 f"{', '.join(header)}")
    if truth_column in compare_columns:
        compare_columns.remove(truth_column)
    index_of = getattr(space, "index_of", None)
    rows: list[TruthRow] = []
    seen: dict[int, int] = {}
    for line, record in enumerate(reader, start=2):
        if None in record:  # more cells than header names
            raise CorrelateError(f"{path}:{line}: has more cells than the header has columns")
        if all(not (v or "").strip() for v in record.values()):
            continue  # blank line
        index_text = (record["arch_index"] or "").strip()
        try:
            arch_index = int(index_text)
        except ValueError:
            raise CorrelateError(f"{path}:{line}: arch_index is {index_text!r}, not an integer") from None
        if arch_index in seen:
            raise CorrelateError(f"{path}:{line}: arch_index {arch_index} already appears on line {seen[arch_index]}")
        seen[arch_index] = line
        arch_text = (record["arch_string"] or "").strip()
        try:
            arch = space.canonical(arch_text)
        except ValueError as error:
            raise CorrelateError(f"{path}:{line}: invalid arch_string: {error}") from None
        if index_of is not None:
            actual = index_of(arch)
            if actual != arch_index:
                raise CorrelateError(f"{path}:{line}: arch_string {arch_text} is {space.name} index {actual}, "
                                     f"but arch_index says {arch_index}")
        truth = _parse_float(record[truth_column], truth_column, line, path, allow_empty=False)
        values = {c: _parse_float(record[c], c, line, path, allow_empty=True) for c in compare_columns}
        rows.append(TruthRow(arch_index, arch, truth, values, line))
    if not rows:
        raise CorrelateError(f"{path} has a header but no rows")
    return Truth(path, truth_column, compare_columns, rows, hashlib.sha256(raw).hexdigest())


def sample_rows(rows: Sequence[TruthRow], k: int | None, seed: int) -> list[TruthRow]:
    """k rows drawn without replacement with random.Random(seed), in file order; all rows if k is None."""
    if k is None:
        return list(rows)
    if not 1 <= k <= len(rows):
        raise CorrelateError(f"--sample {k} is outside 1..{len(rows)} (the truth file has {len(rows)} rows)")
    picked = sorted(random.Random(seed).sample(range(len(rows)), k))
    return [rows[i] for i in picked]


def arch_seed(seed: int, arch_index: int) -> int:
    """The torch seed that initialises architecture `arch_index` in a run with `seed` (63-bit hash)."""
    digest = hashlib.sha256(f"zico-fast/{seed}/{arch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------
# Scoring (in-process or in worker processes)
# ---------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(config: dict) -> None:
    """Per-process setup: thread count, the space, the batch sets of every data seed."""
    import torch

    torch.set_num_threads(config["threads"])
    from zico_fast.data import make_batches
    from zico_fast.spaces import get_space

    _WORKER.clear()
    _WORKER["config"] = config
    _WORKER["space"] = get_space(config["space"])
    _WORKER["batches"] = {
        ds: make_batches(config["data"], config["batch_size"], config["num_batches"], ds, config["device"])
        for ds in config["data_seeds"]
    }


def _score_task(task: tuple) -> dict:
    """(arch_index, arch, repeat, data_seed) -> one scores.jsonl record."""
    import torch

    from zico_fast.scorer import zico_score

    arch_index, arch, repeat, data_seed = task
    config = _WORKER["config"]
    start = time.perf_counter()
    torch.manual_seed(arch_seed(config["seed"], arch_index))
    model = _WORKER["space"].build(arch).to(config["device"])
    result = zico_score(model, _WORKER["batches"][data_seed], nonfinite="nan", restore=False)
    if config["device"] != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    score = result.score
    return {"arch_index": arch_index, "arch": arch, "repeat": repeat, "data_seed": data_seed,
            "zico": score if math.isfinite(score) else None, "layers": len(result.layer_terms),
            "skipped_layers": len(result.skipped), "seconds": round(seconds, 4),
            "threads": torch.get_num_threads(), "pid": os.getpid()}


def _score_all(tasks: list[tuple], config: dict, workers: int, progress: bool, on_result) -> None:
    """Scores `tasks`, calling on_result(record) in the parent as each one finishes."""
    from tqdm import tqdm

    bar = tqdm(total=config["total_tasks"], initial=config["total_tasks"] - len(tasks), unit="arch",
               disable=not progress, dynamic_ncols=True, file=sys.stderr, desc="zico")
    try:
        if workers <= 1 or len(tasks) <= 1:
            import torch

            before = torch.get_num_threads()
            try:
                _init_worker(config)
                for task in tasks:
                    on_result(_score_task(task))
                    bar.update(1)
            finally:
                torch.set_num_threads(before)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # spawn: fresh interpreters, no forked OpenMP/torch thread pools.  A worker that dies breaks
        # the pool (BrokenProcessPool) instead of being respawned forever as multiprocessing.Pool does.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(config,)) as pool:
            futures = [pool.submit(_score_task, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    on_result(future.result())
                    bar.update(1)
            except BrokenProcessPool as error:
                raise CorrelateError(
                    f"a scoring worker process died ({error}); scores so far are saved. If you call "
                    "correlate() from a script, put the call under `if __name__ == '__main__':` (worker "
                    "processes are spawned and import the main module), or pass workers=1") from None
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# The append-only record
# ---------------------------------------------------------------------------------------------
class ScoreLog:
    """DIR/scores.jsonl: a settings line, then one JSON record per line, each flushed and fsynced."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.settings = settings
        self.records: dict[tuple[int, int], dict] = {}
        self._writer = AppendLog(path)

    def open(self) -> "ScoreLog":
        try:
            lines = read_lines(self.path)
        except ValueError:
            raise CorrelateError(f"{self.path} is damaged beyond a truncated last line; "
                                 "move it away to start over") from None
        if not lines:
            self._writer.append({"settings": self.settings})
            return self
        head, *records = lines
        if not isinstance(head, dict) or not isinstance(head.get("settings"), dict):
            raise CorrelateError(f"{self.path}: first line is not a settings record; "
                                 "move the file away to start over")
        stored = head["settings"]
        if stored != self.settings:
            diffs = [f"{k}: {a!r} there, {b!r} now" for k, a, b in settings_changes(stored, self.settings)]
            raise CorrelateError(f"{self.path} was written with different settings ({'; '.join(diffs)}); "
                                 "rerun with the same settings to resume, or use another --out")
        for number, record in enumerate(records, start=2):
            try:
                key = (int(record["arch_index"]), int(record["repeat"]))
            except (KeyError, TypeError, ValueError):
                raise CorrelateError(f"{self.path}:{number} is not a valid score record; "
                                     "the file is damaged beyond a truncated last line") from None
            self.records[key] = record
        return self

    def add(self, record: dict) -> None:
        self.records[(record["arch_index"], record["repeat"])] = record
        self._writer.append(record)

    def close(self) -> None:
        self._writer.close()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_info(workers: int, threads: int) -> dict:
    import scipy
    import torch

    import zico_fast

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu,
            "cpus_available": available_cpus(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "zico_fast": zico_fast.__version__, "workers": workers, "threads_per_worker": threads,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def correlate(truth: str | Path, out: str | Path, *, space: str = "nb201", sample: int | None = None,
              seed: int = 0, compare: Sequence[str] | None = None, truth_column: str = DEFAULT_TRUTH_COLUMN,
              batch_size: int = 128, num_batches: int = 2, data: str | None = None, data_seed: int = 0,
              repeats: int = 1, workers: int | None = None, threads: int | None = None,
              device: str = "cpu", progress: bool = True, command: Sequence[str] | None = None) -> dict:
    """Scores the sample (resuming from out/scores.jsonl), writes every output, returns the report."""
    from zico_fast.spaces import get_space

    if batch_size < 1:
        raise CorrelateError(f"--batch-size must be at least 1, got {batch_size}")
    if num_batches < 2:
        raise CorrelateError(f"--batches must be at least 2 (ZiCo measures gradient spread), got {num_batches}")
    if repeats < 1:
        raise CorrelateError(f"--repeats must be at least 1, got {repeats}")
    if workers is not None and workers < 1:
        raise CorrelateError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise CorrelateError(f"--threads must be at least 1, got {threads}")
    try:
        space_obj = get_space(space)
    except ValueError as error:
        raise CorrelateError(str(error)) from None
    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise CorrelateError(f"--device {device}: no CUDA device is available")
    table = load_truth(truth, space_obj, truth_column, compare)
    rows = sample_rows(table.rows, sample, seed)
    data_name = "bundled" if data is None or str(data) == "bundled" else str(data)
    data_seeds = [data_seed + r for r in range(repeats)]
    try:  # fail early (and in the parent) on unusable data
        from zico_fast.data import make_batches

        make_batches(None if data_name == "bundled" else data_name, batch_size, num_batches, data_seeds[0])
    except (ValueError, FileNotFoundError, OSError) as error:
        raise CorrelateError(f"--data {data_name}: {error}") from None

    cpus = available_cpus()
    if device != "cpu":
        workers, threads = 1, threads or 1
    if workers is None:
        workers = max(1, cpus // (threads or DEFAULT_THREADS_PER_WORKER))
    if threads is None:  # not cpus for one worker: a score must not depend on --workers
        threads = DEFAULT_THREADS_PER_WORKER
    workers = min(workers, len(rows) * repeats)

    indices = [r.arch_index for r in rows]
    settings = {"version": SETTINGS_VERSION, "space": space, "truth_column": truth_column, "seed": seed,
                "sample": sample, "num_archs": len(rows),
                "sample_sha256": hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest(),
                "batch_size": batch_size, "num_batches": num_batches, "data": data_name,
                "data_seed": data_seed, "repeats": repeats, "device": device,
                "init": "torch default, torch.manual_seed(arch_seed(seed, arch_index))", "bn_mode": "train"}
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CorrelateError(f"cannot create --out {out}: {error}") from None
    log = ScoreLog(out / "scores.jsonl", settings).open()
    resumed = len(log.records)
    todo = [(r.arch_index, r.arch, rep, data_seeds[rep]) for rep in range(repeats) for r in rows
            if (r.arch_index, rep) not in log.records]
    used = {r.get("threads") for r in log.records.values()} - {None}
    if todo and device == "cpu" and used and used != {threads}:
        log.close()
        raise CorrelateError(
            f"{log.path} holds scores computed with {'/'.join(map(str, sorted(used)))} intra-op thread(s) per "
            f"worker and this run would use {threads}; scores depend on the thread count (float reduction "
            f"order, about 1% here), so resume with --threads {min(used)} (and --workers to taste)")
    config = {"space": space, "seed": seed, "data": None if data_name == "bundled" else data_name,
              "batch_size": batch_size, "num_batches": num_batches, "data_seeds": data_seeds,
              "device": device, "threads": threads, "total_tasks": len(rows) * repeats}
    wall = time.perf_counter()
    try:
        if todo:
            _score_all(todo, config, workers, progress, log.add)
    finally:
        log.close()
    wall = time.perf_counter() - wall

    report = build_report(table, rows, log.records, space_obj, settings, repeats)
    report.update({
        "command": list(command) if command is not None else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "truth_file": str(Path(truth).resolve()), "truth_sha256": table.sha256,
        "resumed_records": resumed, "scored_this_run": len(todo),
        "machine": machine_info(workers, threads),
    })
    report["timings"]["wall_seconds_this_run"] = round(wall, 2)
    write_outputs(out, report, table, rows, log.records, space_obj, repeats)
    return report


def build_report(table: Truth, rows: list[TruthRow], records: dict, space_obj, settings: dict, repeats: int) -> dict:
    truth = [r.truth for r in rows]
    costs = [space_obj.cost(r.arch) for r in rows]

    def zico_of(rep: int) -> list[float]:
        return [_as_float(records[(r.arch_index, rep)]["zico"]) for r in rows]

    correlations = {"zico": rank_correlations(zico_of(0), truth),
                    "params": rank_correlations([c.params for c in costs], truth),
                    "flops": rank_correlations([c.flops for c in costs], truth)}
    for column in table.compare_columns:
        correlations[column] = rank_correlations([r.compare[column] for r in rows], truth)
    seconds = [records[(r.arch_index, rep)]["seconds"] for rep in range(repeats) for r in rows]
    threads = sorted({records[(r.arch_index, rep)].get("threads") for rep in range(repeats) for r in rows},
                     key=lambda t: (t is None, t))
    report = {
        "n": len(rows), "truth_column": table.column, "batch_size": settings["batch_size"],
        "num_batches": settings["num_batches"], "seed": settings["seed"], "data": settings["data"],
        "data_seed": settings["data_seed"], "settings": settings,
        "correlations": correlations, "compare_columns": table.compare_columns,
        "nonfinite_zico": sum(1 for v in zico_of(0) if not math.isfinite(v)),
        "intra_op_threads_used": threads,
        "timings": {"scoring_seconds_total": round(float(np.sum(seconds)), 2),
                    "seconds_per_arch_mean": round(float(np.mean(seconds)), 4),
                    "seconds_per_arch_median": round(float(np.median(seconds)), 4),
                    "seconds_per_arch_max": round(float(np.max(seconds)), 4)},
    }
    if repeats > 1:
        report["stability"] = stability_summary([zico_of(rep) for rep in range(repeats)], truth,
                                                [settings["data_seed"] + rep for rep in range(repeats)])
    return report


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


def _as_float(value) -> float:
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(out: Path, report: dict, table: Truth, rows: list[TruthRow], records: dict,
                  space_obj, repeats: int) -> None:
    _atomic_write(out / "report.json", json.dumps(_json_safe(report), indent=2) + "\n")
    # scores.csv
    header = ["arch_index", "arch_string", "zico", "params", "flops", "seconds", table.column]
    if repeats > 1:
        header += [f"zico_r{rep}" for rep in range(repeats)]
    header += table.compare_columns
    tmp = out / "scores.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            first = records[(r.arch_index, 0)]
            cost = space_obj.cost(r.arch)
            line = [r.arch_index, r.arch, _fmt(first["zico"]), cost.params, cost.flops, first["seconds"], r.truth]
            if repeats > 1:
                line += [_fmt(records[(r.arch_index, rep)]["zico"]) for rep in range(repeats)]
            line += [_fmt(r.compare[c]) for c in table.compare_columns]
            writer.writerow(line)
    os.replace(tmp, out / "scores.csv")
    _atomic_write(out / "summary.md", summary_markdown(report))
    scatter_plot(out / "scatter.png", [_as_float(records[(r.arch_index, 0)]["zico"]) for r in rows],
                 [r.truth for r in rows], report)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _label(name: str) -> str:
    return {"zico": "**ZiCo (ours)**", "params": "#Params (ours)", "flops": "FLOPs (ours)"}.get(name, name)


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summary_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"# ZiCo rank correlation: {s['space']}, {report['truth_column']}", "",
             f"N = {report['n']} architectures (sample {s['sample'] if s['sample'] is not None else 'all'}, "
             f"seed {s['seed']}); {s['num_batches']} batches of {s['batch_size']} images ({s['data']}, "
             f"data seed {s['data_seed']}); default init, BN in train mode; device {s['device']}.", "",
             "| proxy | Kendall tau | Spearman | N | paper (all 15,625) tau / rho |",
             "|---|---|---|---|---|"]
    ordered = sorted(report["correlations"].items(),
                     key=lambda kv: -(kv[1]["kendall_tau"] if math.isfinite(kv[1]["kendall_tau"]) else -9))
    for name, c in ordered:
        paper = PAPER_CIFAR10.get(name) if report["truth_column"] == DEFAULT_TRUTH_COLUMN else None
        lines.append(f"| {_label(name)} | {_num(c['kendall_tau'])} | {_num(c['spearman'])} | {c['n']} | "
                     f"{f'{paper[0]:.2f} / {paper[1]:.2f}' if paper else ''} |")
    if report.get("nonfinite_zico"):
        lines += ["", f"{report['nonfinite_zico']} architecture(s) got a non-finite ZiCo score and are left out."]
    st = report.get("stability")
    if st:
        k, p = st["zico_kendall_tau"], st["pairwise_kendall_tau"]
        lines += ["", f"## Stability over {st['repeats']} batch draws (data seeds {st['data_seeds']})", "",
                  "| data seed | ZiCo Kendall tau | Spearman |", "|---|---|---|"]
        lines += [f"| {r['data_seed']} | {_num(r['kendall_tau'])} | {_num(r['spearman'])} |" for r in st["per_run"]]
        lines += ["", f"ZiCo Kendall tau vs truth: min {_num(k['min'])}, max {_num(k['max'])}, "
                  f"mean {_num(k['mean'])}, std {_num(k['std'], 4)} (ddof=1).",
                  f"Kendall tau between runs (pairwise): min {_num(p['min'])}, max {_num(p['max'])}, "
                  f"mean {_num(p['mean'])}.",
                  f"Mean score over runs vs truth: tau {_num(st['mean_score_vs_truth']['kendall_tau'])}, "
                  f"rho {_num(st['mean_score_vs_truth']['spearman'])}."]
    t = report["timings"]
    m = report.get("machine", {})
    lines += ["", f"Scoring: {t['seconds_per_arch_mean']:.2f} s per architecture on average "
              f"({m.get('workers', '?')} worker(s) x {m.get('threads_per_worker', '?')} thread(s), {m.get('cpu', '')}; "
              f"torch {m.get('torch', '?')}).", ""]
    return "\n".join(lines)


def scatter_plot(path: Path, zico: list[float], truth: list[float], report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z, t = np.asarray(zico, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    keep = np.isfinite(z) & np.isfinite(t)
    c = report["correlations"]["zico"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(z[keep], t[keep], s=8, alpha=0.6, edgecolors="none")
    ax.set_xlabel("ZiCo score")
    ax.set_ylabel(report["truth_column"])
    ax.set_title(f"ZiCo vs {report['truth_column']} (N={c['n']}): Kendall tau {_num(c['kendall_tau'])}, "
                 f"Spearman {_num(c['spearman'])}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `correlate` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "correlate", help="rank correlation of ZiCo (and #Params, FLOPs, other proxies) with benchmark accuracy",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201", help="search space of the truth file's architectures (default: nb201)")
    p.add_argument("--truth", default=str(BUNDLED_TRUTH), metavar="FILE",
                   help="CSV with arch_index, arch_string and the truth column (default: the bundled "
                        "725-row NB201 ground truth, zico_fast/data/nb201_dev.csv)")
    p.add_argument("--truth-column", default=DEFAULT_TRUTH_COLUMN, help=f"ground-truth column (default: {DEFAULT_TRUTH_COLUMN})")
    p.add_argument("--sample", type=int, default=None, metavar="K", help="score K random rows (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample and each network's initialisation (default: 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes if it holds scores.jsonl)")
    p.add_argument("--compare", type=_columns, default=None, metavar="COLS",
                   help="comma-separated columns of other proxies' scores (default: all naslib_* columns)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128, as the paper)")
    p.add_argument("--batches", type=int, default=2, help="mini-batches per score (default: 2, as the paper)")
    p.add_argument("--data", default=None,
                   help="images: 'bundled' (1,024 real CIFAR-10 images), a .npz, an image folder, or "
                        "torchvision:<Dataset>:<root> (default: bundled)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the batch draw (default: 0)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="stability mode: score with R batch draws (data seeds data-seed..data-seed+R-1)")
    p.add_argument("--workers", type=int, default=None,
                   help="scoring processes (default: available CPUs // --threads)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per worker (default 1; scores differ slightly between thread counts, "
                        "so a resumed run must keep it)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu; cuda scores in one process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args: argparse.Namespace) -> int:
    try:
        report = correlate(args.truth, args.out, space=args.space, sample=args.sample, seed=args.seed,
                           compare=args.compare, truth_column=args.truth_column, batch_size=args.batch_size,
                           num_batches=args.batches, data=args.data, data_seed=args.data_seed,
                           repeats=args.repeats, workers=args.workers, threads=args.threads,
                           device=args.device, progress=not args.no_progress, command=sys.argv)
    except CorrelateError as error:
        print(f"zico-fast correlate: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zico-fast correlate: interrupted; rerun the same command to resume from {args.out}/scores.jsonl",
              file=sys.stderr)
        return 130
    c = report["correlations"]
    print(f"N={report['n']}  Kendall tau / Spearman vs {report['truth_column']}:  "
          f"ZiCo {_num(c['zico']['kendall_tau'])} / {_num(c['zico']['spearman'])}   "
          f"#Params {_num(c['params']['kendall_tau'])} / {_num(c['params']['spearman'])}   "
          f"FLOPs {_num(c['flops']['kendall_tau'])} / {_num(c['flops']['spearman'])}")
    if "stability" in report:
        k = report["stability"]["zico_kendall_tau"]
        print(f"stability over {report['stability']['repeats']} draws: ZiCo tau min {_num(k['min'])} "
              f"max {_num(k['max'])} std {_num(k['std'], 4)}")
    print(f"wrote {Path(args.out) / 'report.json'}, scores.csv, summary.md, scatter.png")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zico-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(None if argv is None else list(argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
