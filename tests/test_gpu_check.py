"""benchmarks/gpu_check.sh and its step scripts on a CPU, so a typo cannot waste a lent GPU: shell
syntax, the dry run's walk through every step and its budget, the failure path, the flags it
passes to the Python steps, and the >2^31 check's logic at a small size (its GPU run is not its
first execution). None of this is a GPU result."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
SHELL_FILES = [SCRIPT, *sorted((ROOT / "benchmarks" / "gpu_steps").glob("*.sh"))]
# In the order; ncu, the sanitizers and the >2^31 check hold reserved slots.
STEPS = ["probe", "build", "tests_kernels", "tests_cuda", "tests_builders", "tests_compile", "big_tensor",
         "ncu", "ncu_report", "sanitizers", "bandwidth", "variants", "end_to_end", "candidates", "workers",
         "search_overhead"]
RESERVED = ["big_tensor", "ncu", "ncu_report", "sanitizers"]


def run_script(out, **env):
    full_env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)


def verdicts(summary):
    """{step: verdict} from the summary's step lines."""
    found = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in STEPS + ["stop"]:
            found[parts[0]] = parts[1]
    return found


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry")
    return run_script(out, DRY_RUN="1"), out


def test_shell_syntax():
    for path in SHELL_FILES:
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, f"{path}: {check.stderr}"
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-x", "-S", "warning", *map(str, SHELL_FILES)], cwd=ROOT,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout[-3000:]


def test_dry_run_walks_every_step_in_order_within_the_budget(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    lines = summary.strip().splitlines()
    assert "DRY RUN" in lines[0] and "NOT a GPU result" in lines[0] and "DRY RUN" in lines[-1]
    assert verdicts(summary) == {"probe": "ok", **{name: "DRY" for name in STEPS[1:]}}
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in STEPS]
    assert order == STEPS
    budget, clock = map(int, re.search(r"budget (\d+) s, clock (\d+) s", summary).groups())
    assert clock + 15 <= budget <= 7 * 60  # the planned steps plus the summary fit ~7 minutes
    # The device tool brings back at most 8 files: exactly two, one log per step in the archive.
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check_logs.tar.gz", "summary.txt"]
    with tarfile.open(out / "gpu_check_logs.tar.gz") as archive:
        names = {Path(n).name for n in archive.getnames()}
    assert {f"{name}.log" for name in STEPS if name != "probe"} <= names


def test_worst_case_durations_keep_the_reserved_slots(tmp_path):
    # Every step taking its whole limit: earlier steps are cut short or skipped, never these.
    result = run_script(tmp_path, DRY_RUN="1", DRY_RUN_WORST="1")
    assert result.returncode == 0, result.stderr[-2000:]
    found = verdicts((tmp_path / "summary.txt").read_text())
    assert all(found[name] == "DRY" for name in RESERVED), found
    assert "SKIPPED" in found.values()  # the budget does bind in the worst case


def test_a_failed_build_stops_the_run_and_says_why(tmp_path):
    result = run_script(tmp_path, PYTHON="false")  # not a dry run: every python call fails at once
    summary = (tmp_path / "summary.txt").read_text()
    assert result.returncode == 1
    assert verdicts(summary) == {"probe": "ok", "build": "FAILED", "stop": "SKIPPED"}
    assert "--- build.log (tail)" in summary and "DRY RUN" not in summary


def test_python_steps_get_only_flags_their_scripts_define(dry_run):
    # Every --flag the script passes to a benchmarks/*.py must appear in that script's --help.
    _, out = dry_run
    with tarfile.open(out / "gpu_check_logs.tar.gz") as archive:
        logs = [archive.extractfile(m).read().decode() for m in archive.getmembers() if m.name.endswith(".log")]
    calls = {}
    for log in logs:
        for script, args in re.findall(r"(benchmarks/[\w/]+\.py) ([^\n]*)", log):
            calls.setdefault(script, set()).update(re.findall(r"(--[\w-]+)", args))
    assert {"benchmarks/big_tensor_check.py", "benchmarks/gpu_steps/variants.py",
            "benchmarks/gpu_steps/build_variant.py"} <= set(calls)
    for script, flags in calls.items():
        if script.startswith("benchmarks/test_"):
            continue  # pytest files, run through pytest
        help_text = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=120).stdout
        assert all(flag in help_text for flag in flags), (script, flags, help_text[-1500:])


def load_big_tensor_check():
    spec = importlib.util.spec_from_file_location("big_tensor_check", ROOT / "benchmarks" / "big_tensor_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_big_tensor_check_logic_on_cpu(capsys):
    check = load_big_tensor_check()
    n = 3 * 4096 + check.TAIL  # the boundary B = n - 9 is a multiple of the CUDA chunk, like 2^31
    assert check.main(["--device", "cpu", "--n", str(n)]) == 0
    assert "8 of 8 checks passed" in capsys.readouterr().out


def test_big_tensor_check_fails_on_a_wrong_sum(monkeypatch, capsys):
    check = load_big_tensor_check()
    monkeypatch.setattr(check, "expected_sum", lambda n: 2.0 * n + 2.0)  # as if a marker were lost
    assert check.main(["--device", "cpu", "--n", "100"]) == 1
    assert "FAIL pair_ratio_sums finite" in capsys.readouterr().out


def test_variant_timing_runs_and_skips_missing_builds():
    # A/A on the CPU: the installed build against itself, and a variant whose build is missing.
    run = subprocess.run([sys.executable, "benchmarks/gpu_steps/variants.py", "--device", "cpu",
                          "--elements", "4000", "--rounds", "1", "--repeats", "2", "default=auto",
                          "again=auto", "missing=/nonexistent/zico_fast_variant.so"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "SKIPPED variant missing" in run.stdout
    assert re.search(r"case accumulate_ float16 200 tensors +again .* ratio +[\d.]+", run.stdout)
    assert "ratio misaligned/aligned" in run.stdout
