"""Quiet runs: a network whose output ignores its input (ZiCo 0, a ZeroSpreadWarning) prints nothing
per candidate in `search` and `correlate`; its record holds the warning and the run ends with one
summary line. The Python API keeps warning (zico_score in test_user_errors; the Scorer here)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zico_fast import Scorer, ZeroSpreadWarning
from zico_fast.spaces.nb201 import NB201Space

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--batch-size", "8", "--device", "cpu", "--no-progress"]
# Real NB201 networks whose cell output node takes 'none' from every node (10% accuracy in the
# bundled table): their output is the classifier's bias whatever the image.
ZERO_SPREAD_INDICES = (5499, 7643)


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "zico_fast", *args, *SMALL], env=env, capture_output=True,
                          text=True, timeout=600)


def assert_quiet(stderr: str, networks: int) -> None:
    assert "ZeroSpreadWarning" not in stderr and "ZiCo score is 0" not in stderr and "Traceback" not in stderr
    summaries = [line for line in stderr.splitlines() if "scored 0" in line]
    assert len(summaries) == 1, stderr
    assert f"{networks} network{'s' if networks > 1 else ''} scored 0: every scored layer had zero gradient " \
           "spread" in summaries[0]


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()[1:]]


def is_zero_spread(record: dict) -> bool:
    return any(w.startswith("zero_spread: ZiCo score is 0") for w in record["warnings"])


def test_correlate_records_zero_spread_networks_and_summarises_once(tmp_path):
    lines = (ROOT / "zico_fast" / "data" / "nb201_dev.csv").read_text().splitlines()
    wanted = {"37", "60", *map(str, ZERO_SPREAD_INDICES)}
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split(",")[0] in wanted)]) + "\n")
    done = run_cli("correlate", "--space", "nb201", "--truth", str(truth), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr, 2)
    logged = records(tmp_path / "out" / "scores.jsonl")
    assert len(logged) == 4
    for record in logged:
        zero = record["arch_index"] in ZERO_SPREAD_INDICES
        assert is_zero_spread(record) == zero and (record["score"] == 0.0) == zero
        assert record["warnings"] == [] or zero


def test_search_records_zero_spread_and_a_resume_counts_the_whole_log(tmp_path):
    space = NB201Space()
    zero = space.arch_from_index(10)  # '|none~0|none~1|none~2|' into the output node
    out = str(tmp_path / "out")
    done = run_cli("search", "--space", "nb201", "--strategy", "all", "--iterations", "11", "--out", out)
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr, 1)
    logged = records(tmp_path / "out" / "search.jsonl")
    assert [r["id"] for r in logged if is_zero_spread(r)] == [10] and logged[10]["arch"] == zero
    assert logged[10]["score"] == 0.0 and all(r["warnings"] == [] for r in logged[:10])
    again = run_cli("search", "--space", "nb201", "--strategy", "all", "--iterations", "12", "--out", out)
    assert again.returncode == 0, again.stderr
    assert_quiet(again.stderr, 1)  # the summary is over the whole log, the resumed records included


def test_the_scorer_warns_in_the_callers_process_and_records_it():
    space = NB201Space(C=4, N=1, resolution=16)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 10, (4,), generator=generator))
               for _ in range(2)]
    zero, normal = space.arch_from_index(10), space.arch_from_index(37)
    with Scorer(space, batches, workers=1) as scorer:  # a worker process: its own warning would stay there
        with pytest.warns(ZeroSpreadWarning, match=r"\|none~0\|none~1\|none~2\|: ZiCo score is 0") as caught:
            first, second = scorer.score([zero, normal])
    assert len([w for w in caught if issubclass(w.category, ZeroSpreadWarning)]) == 1
    assert is_zero_spread(first) and first["score"] == 0.0 and second["warnings"] == []
