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


from testing import one_thread  # noqa: E402,F401  (the fixture, used by every test here)

pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert report["repro"]["threads"] == 1 and report["repro"]["cudnn_deterministic"]


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


def test_outputs_the_disk_refuses_leave_a_complete_log_to_rerun_from(tmp_path, capsys):
    args = ["search", "--space", "nb201", "--iterations", "3", "--population", "2", "--out", str(tmp_path),
            "--no-progress", *SMALL]
    assert main(args[:4] + ["2"] + args[5:]) == 0  # a first run: the folder and its log are this command's
    (tmp_path / "best.json").unlink()
    (tmp_path / "best.json").mkdir()  # best.json cannot be written: as a full disk would refuse it
    capsys.readouterr()
    assert main(args) == 2  # extends the run to 3 iterations, then fails to write the outputs
    resuming, error = capsys.readouterr().err.splitlines()
    assert resuming.startswith("resuming the search logged in")
    assert "cannot write the outputs in" in error and "run the same command again" in error
    log = (tmp_path / "search.jsonl").read_text()
    (tmp_path / "best.json").rmdir()
    assert main(args) == 0 and json.loads((tmp_path / "best.json").read_text())["iterations"] == 3
    assert (tmp_path / "search.jsonl").read_text() == log  # nothing scored again


@pytest.mark.parametrize("args, message", [
    (["score", "--arch", "|nor_conv_3x3~0|+|bogus~0|"], "node groups"),
    (["score", "--index", "15625"], "index must be in"),
    (["score", "--structure", "SuperConvK3BNRELU(3,8,2)"], "positive integers"),
    (["score", "--model", "no_such_module_here:f"], "cannot import"),
    (["score", "--model", "json:no_such_factory"], "no attribute"),
    (["score", "--arch", ARCH, "--data", "/no/such/data.npz"], "no data at"),
    (["score", "--arch", ARCH, "--batch-size", "4096"], "need"),
    (["score", "--arch", ARCH, "--num-classes", "5"], "--num-classes"),
    (["score", "--arch", ARCH, "--synthetic", "--data", "x.npz"], "exclude each other"),
    (["score", "--arch", ARCH, "--device", "mps"], "not available on this machine"),
    (["score", "--arch", ARCH, "--device", "tpu"], "not a torch device"),
    (["search", "--device", "mps", "--out", "{tmp}"], "not available on this machine"),
    (["correlate", "--device", "mps", "--out", "{tmp}"], "not available on this machine"),
    (["search", "--max-params", "10", "--out", "{tmp}", "--no-progress"], "impossible budget"),
    # Flags that would be ignored are refused instead.
    (["score", "--index", "3", "--bn-eps", "1e-3"], "shape the mobilenet space only, not nb201"),
    (["search", "--space", "nb101", "--no-reslink", "--out", "{tmp}"], "shape the mobilenet space only, not nb101"),
    (["score", "--model", "json:loads", "--space", "nb101"], "--model builds its own"),
    # Output places that cannot be folders are refused before any candidate is scored.
    (["search", "--out", "{file}", "--no-progress"], "is a file, not a folder"),
    (["search", "--out", "{file}/run", "--no-progress"], "cannot make --out folder"),
    (["correlate", "--out", "{file}", "--no-progress"], "is a file, not a folder"),
    (["score", "--arch", ARCH, "--out", "{file}/score.json"], "is a file, not a folder"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    user_file = tmp_path / "a_file"
    user_file.write_text("the user's own")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(user_file)) for a in args]
    device = [] if "--device" in args else ["--device", "cpu"]
    assert main(args + device + ["--batch-size", "8"] * ("--batch-size" not in args)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert user_file.read_text() == "the user's own"


@pytest.mark.parametrize("command, theirs", [("search", "best.json"), ("correlate", "report.json")])
def test_user_files_named_like_outputs_are_never_overwritten(command, theirs, tmp_path, capsys):
    (tmp_path / theirs).write_text("the user's own")
    assert main([command, "--out", str(tmp_path), "--no-progress", *SMALL]) == 2
    err = capsys.readouterr().err
    assert f"already holds {theirs} but no" in err and "would overwrite it" in err and err.count("\n") == 1
    assert (tmp_path / theirs).read_text() == "the user's own" and sorted(tmp_path.iterdir()) == [tmp_path / theirs]


def test_resume_with_other_settings_exits_2(tmp_path, capsys):
    args = ["search", "--iterations", "1", "--population", "2", "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(args) == 0
    assert main(args + ["--seed", "5"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "zico_fast", "score", "--arch", "nonsense"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("zico-fast score: error:") and "Traceback" not in done.stderr
    assert "search" in subprocess.run([sys.executable, "-m", "zico_fast", "--help"], env=env, capture_output=True,
                                      text=True, timeout=120).stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["score", "--arch", ARCH], ["search", "--out", "{tmp}"],
                                     ["correlate", "--out", "{tmp}"]])
def test_missing_cuda_is_one_line(command, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path / "o")) for a in command] + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' is not available" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [
    ["search", "--out", "o", "--threads", "-2"], ["search", "--out", "o", "--threads", "0"],
    ["search", "--out", "o", "--workers", "0"], ["score", "--arch", ARCH, "--resolution", "0"],
    ["search", "--out", "o", "--iterations", "0"], ["search", "--out", "o", "--batches", "1"],
    ["correlate", "--out", "o", "--workers", "0"], ["score", "--arch", ARCH, "--threads", "0"],
    ["search", "--out", "o", "--max-depth", "0"], ["search", "--out", "o", "--max-flops", "-1"],
    ["search", "--out", "o", "--max-params", "0"], ["search", "--out", "o", "--max-flops", "nan"],
    ["score", "--index", "3", "--bn-eps", "-1"],
])
def test_bad_numbers_are_rejected_up_front(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "must be at least" in err or "must be above 0" in err


def test_non_finite_score_is_exit_1_and_strict_json(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(FACTORY + """
import torch

def poisoned():
    net = tiny()
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("inf")
    return net
""")
    assert main(["score", "--model", f"{tmp_path / 'nets.py'}:poisoned", "--out", "-", *SMALL]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] is None  # strict JSON: null, never a bare NaN
    assert "the ZiCo score is not finite" in captured.err


def test_model_with_tuple_output_and_output_index(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(FACTORY + """
class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny()

    def forward(self, x):
        return self.net(x), x.mean()

def pair():
    return Pair()
""")
    spec = f"{tmp_path / 'nets.py'}:pair"
    assert main(["score", "--model", spec, *SMALL]) == 2
    assert "select_output" in capsys.readouterr().err
    assert main(["score", "--model", spec, "--output-index", "0", *SMALL]) == 0


def test_score_out_dash_is_pure_json_and_out_folders_are_created(tmp_path, capsys):
    assert main(["score", "--arch", ARCH, "--out", "-", *SMALL]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["network"] == ARCH and "ZiCo score" in captured.err
    nested = tmp_path / "new" / "folder" / "s.json"
    assert main(["score", "--arch", ARCH, "--out", str(nested), *SMALL]) == 0
    assert json.loads(nested.read_text())["score"] == json.loads(captured.out)["score"]


def test_version_and_help_list_every_command_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("zico-fast 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in ("score", "search", "correlate"))
    for command in ("score", "search", "correlate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--threads THREADS torch intra-op" in text and "(default: 1)" in text and "(default: 128)" in text


def test_missing_optional_dependencies_are_named_before_the_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    import zico_fast.reporting

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else find_spec(name, *a))
    assert main(["correlate", "--out", str(tmp_path / "c"), *SMALL]) == 2
    assert "pip install 'zico_fast[validate]'" in capsys.readouterr().err and not (tmp_path / "c").exists()
    monkeypatch.setattr(zico_fast.reporting, "plotting_available", lambda: False)
    args = ["search", "--iterations", "2", "--population", "2", "--out", str(tmp_path / "s"), "--no-progress", *SMALL]
    assert main(args) == 0  # the result is kept; the figure is a warning
    err = capsys.readouterr().err
    assert "search.png not drawn: matplotlib is missing (pip install 'zico_fast[plot]')" in err
    assert json.loads((tmp_path / "s" / "best.json").read_text())["arch"] and not (tmp_path / "s" / "search.png").exists()


@pytest.mark.slow
def test_score_search_and_correlate_agree_bit_for_bit(tmp_path, capsys):
    """The seed rule: one architecture, seed, batches and thread count give one score in every command."""
    common = ["--seed", "3", "--batch-size", "8", "--device", "cpu", "--threads", "1"]
    assert main(["search", "--iterations", "2", "--generation", "2", "--population", "2", "--out",
                 str(tmp_path / "s"), "--no-progress", *common]) == 0
    from zico_fast.engine import read_run_log

    searched = read_run_log(tmp_path / "s" / "search.jsonl")[1]
    space = NB201Space()
    rows = [[space.index_of(r["arch"]), r["arch"], float(i)] for i, r in enumerate(searched)]
    (tmp_path / "t.csv").write_text("arch_index,arch_string,cifar10_test_acc\n"
                                    + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    assert main(["correlate", "--truth", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c"), "--no-progress",
                 *common]) == 0
    correlated = {r["arch"]: r["score"] for r in read_run_log(tmp_path / "c" / "scores.jsonl")[1]}
    capsys.readouterr()
    for record in searched:
        assert main(["score", "--arch", record["arch"], "--out", "-", *common]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert scored["score"] == record["score"] == correlated[record["arch"]]
        assert scored["init_seed"] == record["init_seed"]


def test_search_resume_with_fewer_iterations_is_refused(tmp_path, capsys):
    args = ["search", "--iterations", "3", "--population", "2", "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(args) == 0
    best = (tmp_path / "best.json").read_bytes()
    assert main(args[:2] + ["2"] + args[3:]) == 2
    assert "already holds 3 candidates" in capsys.readouterr().err
    assert (tmp_path / "best.json").read_bytes() == best


def test_corrupt_search_log_names_file_and_line(tmp_path, capsys):
    args = ["search", "--iterations", "2", "--population", "2", "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(args) == 0
    log = tmp_path / "search.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + '{"iteration": 0}\n' + "".join(lines[2:]))
    assert main(args) == 2
    assert f"{log}:2: a JSON line without id" in capsys.readouterr().err
