"""Tests of the `zico-fast` command line: score, search, and one clear line (exit 2) for bad input."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zico_fast.cli import main
from zico_fast.spaces.nb201 import NB201Space

ROOT = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SMALL = ["--batch-size", "8", "--device", "cpu"]
FACTORY = '''
import torch.nn as nn

def tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10), nn.Linear(10, 10))
'''


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: far faster than two when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_score_nb201_arch_and_index(tmp_path, capsys):
    assert main(["score", "--arch", ARCH, "--out", str(tmp_path / "a.json"), *SMALL]) == 0
    assert "ZiCo score" in capsys.readouterr().out
    report = json.loads((tmp_path / "a.json").read_text())
    assert math.isfinite(report["score"]) and report["network"] == ARCH and report["num_batches"] == 2
    assert report["score"] == pytest.approx(sum(report["layer_terms"].values()))
    assert report["params"] == NB201Space().cost(ARCH).params
    index = NB201Space().index_of(ARCH)
    assert main(["score", "--index", str(index), "--out", str(tmp_path / "i.json"), *SMALL]) == 0
    assert json.loads((tmp_path / "i.json").read_text())["score"] == report["score"]  # same init seed
    assert report["threads"] == 1


def test_score_module_factory(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_nets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--model", "my_nets:tiny", "--out", "-", *SMALL]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert set(report["layer_terms"]) == {"0", "4", "5"} and report["params"] == 224 + 90 + 110
    assert main(["score", "--model", str(tmp_path / "my_nets.py") + ":tiny", *SMALL]) == 0


def test_score_mobilenet_structure(capsys):
    structure = "SuperConvK3BNRELU(3,8,2,1)SuperResIDWE2K3(8,16,2,8,1)SuperConvK1BNRELU(16,64,1,1)"
    assert main(["score", "--structure", structure, "--resolution", "32", "--num-classes", "10",
                 "--no-reslink", *SMALL]) == 0
    assert "ZiCo score" in capsys.readouterr().out


def test_search_writes_outputs_and_resumes(tmp_path, capsys):
    args = ["search", "--space", "nb201", "--iterations", "4", "--population", "3", "--out", str(tmp_path),
            "--no-progress", *SMALL]
    assert main(args) == 0
    out = capsys.readouterr().out
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["arch"] in out and best["iterations"] == 4
    assert len((tmp_path / "candidates.csv").read_text().splitlines()) == 5
    assert (tmp_path / "search.png").exists() and (tmp_path / "search.jsonl").exists()
    assert main(args[:4] + ["6"] + args[5:]) == 0  # more iterations: resumes, scores only 2 more
    assert json.loads((tmp_path / "best.json").read_text())["iterations"] == 6
    assert "resuming" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["score", "--arch", "|nor_conv_3x3~0|+|bogus~0|"], "node groups"),
    (["score", "--index", "15625"], "index must be in"),
    (["score", "--structure", "SuperConvK3BNRELU(3,8,2)"], "positive integers"),
    (["score", "--model", "no_such_module_here:f"], "cannot import"),
    (["score", "--model", "json:no_such_factory"], "no attribute"),
    (["score", "--arch", ARCH, "--data", "/no/such/data.npz"], "no data at"),
    (["score", "--arch", ARCH, "--batch-size", "4096"], "need"),
    (["score", "--arch", ARCH, "--num-classes", "5"], "--num-classes"),
    (["search", "--max-params", "10", "--out", "{tmp}", "--no-progress"], "impossible budget"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args + ["--device", "cpu", "--batch-size", "8"] * ("--batch-size" not in args)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_resume_with_other_settings_exits_2(tmp_path, capsys):
    args = ["search", "--iterations", "1", "--population", "2", "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(args) == 0
    assert main(args + ["--seed", "5"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "zico_fast", "score", "--arch", "nonsense"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("zico-fast: error:") and "Traceback" not in done.stderr
    assert "search" in subprocess.run([sys.executable, "-m", "zico_fast", "--help"], env=env, capture_output=True,
                                      text=True, timeout=120).stdout
