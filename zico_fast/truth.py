"""Ground-truth tables for `correlate`: a CSV of (arch_index, arch_string, accuracy, other
proxies' columns), checked row by row against a search space, and reproducible samples of it."""
from __future__ import annotations

import csv
import hashlib
import math
import random
from pathlib import Path
from typing import Sequence

from zico_fast.truth_naslib import load_naslib_json
from zico_fast.truth_table import Truth, TruthError, TruthRow

DEFAULT_TRUTH_COLUMN = "cifar10_test_acc"
# NAS-Bench-101's tables have CIFAR-10 validation accuracy only (neither source holds a test split),
# and NAS-Bench-301's data (the darts space) holds validation accuracy only.
SPACE_TRUTH_COLUMNS = {("nb101", "cifar10"): "cifar10_val_acc", ("darts", "cifar10"): "cifar10_val_acc"}
SPACES_WITHOUT_CIFAR100 = {"nb101": "NAS-Bench-101 was trained on CIFAR-10 only",
                           "darts": "NAS-Bench-301 was trained on CIFAR-10 only"}
COMPARE_PREFIX = "naslib_"
# Other columns compared by default: NAS-Bench-101's own parameter count (nb101_uniform_dev.csv).
COMPARE_COLUMNS = ("nb101_trainable_params",)
# The tables shipped in zico_fast/data, by the name `--truth` accepts: name -> (space, file).
BUNDLED_TABLES = {"nb201-dev": ("nb201", "nb201_dev.csv"), "nb101-dev": ("nb101", "nb101_dev.csv"),
                  "nb101-uniform": ("nb101", "nb101_uniform_dev.csv"), "nb301-dev": ("darts", "nb301_dev.csv")}
# A space's default table when it is not data/<space>_dev.csv (the darts space's is NAS-Bench-301's).
DEFAULT_TABLES = {"darts": "nb301_dev.csv"}


def _parse_float(text: str, what: str, line: int, path: Path, allow_empty: bool) -> float:
    stripped = (text or "").strip()
    if not stripped and allow_empty:
        return math.nan
    try:
        value = float(stripped)
    except ValueError:
        raise TruthError(f"{path}:{line}: {what} is {text!r}, not a number") from None
    if not allow_empty and not math.isfinite(value):
        raise TruthError(f"{path}:{line}: {what} is {text!r}; the ground truth must be a finite number")
    return value


def load_truth(path: str | Path, space, truth_column: str = DEFAULT_TRUTH_COLUMN,
               compare: Sequence[str] | None = None) -> Truth:
    """Reads and checks a ground-truth CSV: columns arch_string, `truth_column` and optionally
    arch_index (without it, rows get the space's index, or for a space without one their position
    in the file). A .json file is NASLib's zero-cost format (truth_naslib; 'file.json#task' picks
    one of its tasks).

    Every arch_string must be valid in `space` and (where the space numbers its architectures) name
    the architecture its arch_index says.  `compare`: columns holding other proxies' scores (None:
    every column starting with "naslib_", and nb101_trainable_params); an empty cell there is a
    missing score (NaN), text is an error.  Raises TruthError with the file, line and what is wrong.
    """
    path, task = Path(path), None
    name, hash_sign, named_task = str(path).rpartition("#")
    if hash_sign and name.endswith(".json") and not path.is_file():  # zc_nasbench201.json#cifar100
        path, task = Path(name), named_task
    if not path.is_file():
        raise TruthError(f"truth file {path} does not exist")
    if path.suffix.lower() == ".json":
        return load_naslib_json(path, space, truth_column, compare, task)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TruthError(f"{path} is not a UTF-8 CSV file ({error})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise TruthError(f"{path} is empty; expected a CSV header with arch_index, arch_string, {truth_column}")
    reader.fieldnames = header
    numbered = "arch_index" in header  # else rows are numbered by the space's index, or in file order
    missing = [c for c in ("arch_string", truth_column) if c not in header]
    if missing:
        raise TruthError(f"{path} lacks column(s) {', '.join(missing)}; its columns are: {', '.join(header)}")
    if compare is None:
        compare_columns = [c for c in header if c.startswith(COMPARE_PREFIX) or c in COMPARE_COLUMNS]
    else:
        compare_columns = [c for c in compare if c]
        unknown = [c for c in compare_columns if c not in header]
        if unknown:
            raise TruthError(f"compare column(s) {', '.join(unknown)} not in {path}; its columns are: "
                                 f"{', '.join(header)}")
    if truth_column in compare_columns:
        compare_columns.remove(truth_column)
    rows: list[TruthRow] = []
    seen: dict[int, int] = {}
    for line, record in enumerate(reader, start=2):
        if None in record:  # more cells than header names
            raise TruthError(f"{path}:{line}: has more cells than the header has columns")
        if all(not (v or "").strip() for v in record.values()):
            continue  # blank line
        arch_text = (record["arch_string"] or "").strip()
        try:
            arch = space.canonical(arch_text)
        except ValueError as error:
            raise TruthError(f"{path}:{line}: invalid arch_string: {error}") from None
        index_text = (record["arch_index"] or "").strip() if numbered else None
        if index_text is None:
            arch_index = space.index_of(arch) if space.has_index else len(rows)
        else:
            try:
                arch_index = int(index_text)
            except ValueError:
                raise TruthError(f"{path}:{line}: arch_index is {index_text!r}, not an integer") from None
        if arch_index in seen:
            raise TruthError(f"{path}:{line}: arch_index {arch_index} already appears on line {seen[arch_index]}")
        seen[arch_index] = line
        if space.has_index and numbered:
            actual = space.index_of(arch)
            if actual != arch_index:
                raise TruthError(f"{path}:{line}: arch_string {arch_text} is {space.name} index {actual}, "
                                     f"but arch_index says {arch_index}")
        truth = _parse_float(record[truth_column], truth_column, line, path, allow_empty=False)
        values = {c: _parse_float(record[c], c, line, path, allow_empty=True) for c in compare_columns}
        rows.append(TruthRow(arch_index, arch, truth, values, line))
    if not rows:
        raise TruthError(f"{path} has a header but no rows")
    return Truth(path, truth_column, compare_columns, rows, hashlib.sha256(raw).hexdigest())


def sample_rows(rows: Sequence[TruthRow], k: int | None, seed: int) -> list[TruthRow]:
    """k rows drawn without replacement with random.Random(seed), in file order; all rows if k is None."""
    if k is None:
        return list(rows)
    if not 1 <= k <= len(rows):
        raise TruthError(f"sample {k} is outside 1..{len(rows)} (the truth file has {len(rows)} rows)")
    picked = sorted(random.Random(seed).sample(range(len(rows)), k))
    return [rows[i] for i in picked]


def default_truth_column(space_name: str, dataset: str = "cifar10") -> str:
    """The accuracy column correlate compares with when none is named: the bundled table's column
    for networks trained on `dataset`."""
    if dataset != "cifar10" and space_name in SPACES_WITHOUT_CIFAR100:
        raise TruthError(f"the {space_name} space has no {dataset} accuracies ({SPACES_WITHOUT_CIFAR100[space_name]}); "
                         "use --dataset cifar10")
    return SPACE_TRUTH_COLUMNS.get((space_name, dataset), f"{dataset}_test_acc")


def check_column_dataset(column: str, dataset: str) -> None:
    """Refuses a truth column that names the other CIFAR data set (cifar10_* with cifar100 images,
    or cifar100_* with cifar10 images): scores on one data set ranked against the other's accuracy
    answer a question nobody asked, and the numbers would look like the paper's column."""
    named = {part for part in column.lower().split("_") if part in ("cifar10", "cifar100")}
    if named and dataset not in named:
        other = named.pop()
        raise TruthError(f"truth column {column} holds {other} accuracies but the networks are scored on {dataset} "
                         f"images; pass --dataset {other}, or a {dataset} column")


def resolve_truth(truth: str | Path | None, space_name: str) -> Path:
    """The CSV `truth` names: None is the space's bundled dev table, a name of BUNDLED_TABLES
    (e.g. "nb101-uniform") that shipped table, anything else a path (./nb101-uniform for a file so named)."""
    if truth is None:
        return bundled_truth(space_name)
    if str(truth) in BUNDLED_TABLES:
        table_space, file = BUNDLED_TABLES[str(truth)]
        if table_space != space_name:
            raise TruthError(f"the bundled table {truth} holds {table_space} architectures, not {space_name}; "
                             f"pass --space {table_space}")
        return Path(__file__).parent / "data" / file
    return Path(truth)


# Where users get the table of a space that ships none (its accuracies are the benchmark's to distribute).
TRUTH_SOURCES = {
    "sss": "no NATS-Bench-SSS accuracies are bundled; get NATS-sss-v1_0-50262.pickle.pbz2 from "
           "github.com/D-X-Y/NATS-Bench, open it with api = nats_bench.create(path, 'sss'), write a CSV of "
           "arch_index (i), arch_string (api.arch(i)) and cifar10_test_acc "
           "(api.get_more_info(i, 'cifar10', hp='90')['test-accuracy']), and pass it as --truth",
}


def bundled_truth(space_name: str) -> Path:
    """The dev CSV shipped for a space (data/<space>_dev.csv)."""
    path = Path(__file__).parent / "data" / DEFAULT_TABLES.get(space_name, f"{space_name}_dev.csv")
    if not path.is_file():
        raise TruthError(TRUTH_SOURCES.get(space_name,
                                           f"no bundled ground truth for the {space_name} space; pass a truth CSV"))
    return path
