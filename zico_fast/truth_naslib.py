"""NASLib's zero-cost benchmark files (zc_nasbench201.json, zc_nasbench101.json, zc_nasbench301.json)
read directly as correlate's ground truth:

    {benchmark: {task: {architecture key: {"val_accuracy": 93.1, "snip": 12.5, ...}}}}

or, in NASLib's later files, {task: {key: {...}}} without the benchmark level. A proxy's value is a
number or {"score": number, "time": seconds} (both occur); text fields ("idx", "arch") are skipped. Keys are NASLib's
encodings: nb201 the 6 op indices in NASLib's edge and op order, nb101 the flattened adjacency
matrix and op indices, nb301 (the darts space) the compact genotype. Its proxies become comparison
columns named naslib_<proxy>, as in the bundled tables.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
from pathlib import Path

from zico_fast.errors import ZiCoUserError
from zico_fast.truth_table import Truth, TruthError, TruthRow

# NASLib's benchmark name -> our space's name
BENCHMARK_SPACES = {"nasbench201": "nb201", "nasbench101": "nb101", "nasbench301": "darts"}
# naslib/search_spaces/nasbench201/conversions.py: OP_NAMES_NB201 and EDGE_LIST (1-based nodes
# (from, to)), written here as our op names and (to, from) 0-based node pairs, in the key's order.
NB201_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))
PREFIX = "naslib_"


def nb201_arch(key: str) -> str:
    """The NB201 string of NASLib's op-index key, e.g. '(4, 3, 3, 3, 2, 3)'; ValueError if it is none."""
    try:
        ops = ast.literal_eval(key)
    except (ValueError, SyntaxError):
        ops = None
    if not (isinstance(ops, (tuple, list)) and len(ops) == 6
            and all(isinstance(o, int) and 0 <= o < len(NB201_OPS) for o in ops)):
        raise ValueError(f"{key!r} is not NASLib's NB201 encoding (6 op indices 0..4)")
    by_edge = dict(zip(NB201_EDGES, ops))
    return "+".join("|" + "|".join(f"{NB201_OPS[by_edge[(node, source)]]}~{source}" for source in range(node)) + "|"
                    for node in (1, 2, 3))


def _number(value, what: str) -> float:
    """A value or a {"score": value, ...} as a float; None (a proxy NASLib could not compute) is NaN."""
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"{what} is an object without 'score' (keys: {', '.join(map(str, value))})")
        value = value["score"]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is {value!r}, not a number")
    return float(value)


def _task(path: Path, benchmark: str, tasks: dict, task: str | None) -> str:
    if task is None:  # NASLib's main task where the file has it, else its only one
        task = "cifar10" if "cifar10" in tasks or len(tasks) != 1 else next(iter(tasks))
    if task not in tasks:
        raise TruthError(f"{path}: {benchmark} has no task {task!r}; its tasks are {', '.join(tasks)}: "
                            f"name one as --truth {path}#TASK")
    if not isinstance(tasks[task], dict) or not tasks[task]:
        raise TruthError(f"{path}: {benchmark}/{task} holds no architectures")
    return task


def load_naslib_json(path: Path, space, truth_column: str, compare, task: str | None = None):
    """A Truth of `task` (None: cifar10, or the file's only task) of a NASLib zero-cost JSON file.
    Rows keep the file's order; arch_index is the space's index where it numbers its
    architectures, else the row's position. The truth column is named '<task>_<truth_column>' (so
    correlate refuses scoring it on the other CIFAR's images). Errors name the file and the entry."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TruthError(f"{path} is not JSON ({error})") from None
    if not (isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values())):
        raise TruthError(f"{path} is not a NASLib zero-cost file: expected {{task: {{arch: {{...}}}}}}, optionally "
                         "inside {benchmark: ...}")
    benchmark, tasks = next(iter(data.items())) if len(data) == 1 and next(iter(data)) in BENCHMARK_SPACES \
        else (space.name, data)
    expected = BENCHMARK_SPACES.get(benchmark)
    if expected is not None and expected != space.name and space.name in BENCHMARK_SPACES.values():
        raise TruthError(f"{path} holds {benchmark} architectures; pass --space {expected}")
    task = _task(path, benchmark, tasks, task)
    entries = tasks[task]
    proxies = sorted({k for entry in entries.values() if isinstance(entry, dict) for k, v in entry.items()
                      if not isinstance(v, str)} - {truth_column})
    if compare is None:
        columns = [PREFIX + p for p in proxies]
    else:
        columns = [c if c.startswith(PREFIX) else PREFIX + c for c in compare if c]
        unknown = [c for c in columns if c[len(PREFIX):] not in proxies]
        if unknown:
            raise TruthError(f"compare column(s) {', '.join(unknown)} not in {path} ({benchmark}/{task}); it has: "
                             f"{', '.join(PREFIX + p for p in proxies)}")
    to_arch = nb201_arch if space.name == "nb201" else space.canonical
    rows = []
    for position, (key, entry) in enumerate(entries.items()):
        where = f"{path}: {benchmark}/{task} entry {key!r}"
        if not isinstance(entry, dict):
            raise TruthError(f"{where} is a {type(entry).__name__}, not an object of values")
        if truth_column not in entry:
            raise TruthError(f"{where} has no {truth_column!r} (it has {', '.join(entry)}); choose --truth-column")
        try:
            arch = space.canonical(to_arch(key))
            truth = _number(entry[truth_column], truth_column)
            values = {c: _number(entry.get(c[len(PREFIX):]), c[len(PREFIX):]) for c in columns}
        except (ValueError, ZiCoUserError) as error:  # the spaces' parsers raise either
            raise TruthError(f"{where}: {error}") from None
        if not math.isfinite(truth):
            raise TruthError(f"{where}: {truth_column} is {entry[truth_column]!r}; the ground truth must be finite")
        index = space.index_of(arch) if space.has_index else position
        rows.append(TruthRow(index, arch, truth, values, position + 1))
    return Truth(path, f"{task}_{truth_column}", columns, rows, hashlib.sha256(raw + task.encode()).hexdigest())
