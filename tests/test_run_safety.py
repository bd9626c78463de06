"""Run safety with real processes and real signals: one writer per run folder (a second search is
refused naming the first, a killed holder's folder resumes), clean stops on SIGTERM and Ctrl-C
(exit 143/130, the resume line, a whole log, no worker left), a worker mid-candidate killed at
once, a second Ctrl-C that stops at once, workers that die with a driver killed by -9, and the signal
reported as sent when Ray swaps our exception for a bare KeyboardInterrupt."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zico_fast.engine import read_run_log
from zico_fast.engine.run_lock import lock_path

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1"}


def cli_search(out, iterations, workers):
    return [sys.executable, "-m", "zico_fast", "search", "--space", "nb201", "--synthetic", "--batch-size", "8",
            "--batches", "2", "--iterations", str(iterations), "--population", "4", "--generation", "2",
            "--seed", "1", "--threads", "1", "--device", "cpu", "--no-progress", "--workers", str(workers),
            "--out", str(out)]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(p) for p in task.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left to collect


def still_alive(pids, seconds=3.0) -> list[tuple[int, bytes]]:
    """(pid, command line) of those of `pids` alive after up to `seconds` (a killed process takes a moment)."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return [(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]) for pid in pids if alive(pid)]


def wait_until(condition, proc, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"the run ended early (exit {proc.returncode})"
        time.sleep(0.05)
    raise AssertionError("timed out")


def records_in(log) -> int:
    return log.read_bytes().count(b"\n") - 1 if log.exists() else 0


def test_a_second_search_on_the_folder_is_refused_and_the_first_is_unharmed(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(cli_search(out, 16, 1), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = lock_path(out / "search.jsonl")
    wait_until(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text(), first)
    second = subprocess.run(cli_search(out, 16, 1), env=ENV, capture_output=True, text=True, timeout=240)
    assert second.returncode == 2, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert f"in use by another run: pid {first.pid} on " in second.stderr and "started 20" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()[-2000:]
    first.stderr.close()
    _, records = read_run_log(out / "search.jsonl")
    assert [r["id"] for r in records] == list(range(16))  # one writer: every iteration once, in order
    assert not lock.exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    log = out / "search.jsonl"
    proc = subprocess.Popen(cli_search(out, 6, 1), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: records_in(log) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(log).exists()  # its file stays; the lock itself went with the process
    done = subprocess.run(cli_search(out, 6, 1), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in read_run_log(log)[1]] == list(range(6))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_search_cleanly_and_it_resumes(sig, tmp_path):
    out = tmp_path / "run"
    log = out / "search.jsonl"
    proc = subprocess.Popen(cli_search(out, 12, 2), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: records_in(log) >= 2, proc)
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    start = time.time()
    proc.send_signal(sig)
    status = proc.wait(timeout=60)
    seconds = time.time() - start
    err = proc.stderr.read()
    proc.stderr.close()
    assert status == 128 + sig and seconds < 10, (status, seconds, err[-2000:])
    last = err.strip().splitlines()[-1]
    assert f"stopped by {sig.name}" in last and "to resume run the same command: zico-fast search " in last
    assert "Traceback" not in err
    assert not still_alive(workers)
    kept = [r["id"] for r in read_run_log(log)[1]]  # parses: whole lines only
    assert kept == list(range(len(kept))) and 2 <= len(kept) < 12
    assert not lock_path(log).exists()
    done = subprocess.run(cli_search(out, 12, 2), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in read_run_log(log)[1]] == list(range(12))


DRIVER = """
import sys, time
from engine_spaces import SlowSpace
from zico_fast.clean_stop import Stopped, stop_cleanly
from zico_fast.data import make_batches
from zico_fast.engine import ProcessBackend
from zico_fast.search import search

class Backend(ProcessBackend):
    def close(self):
        if sys.argv[3] == "hang":
            time.sleep(120)  # a clean-up that does not end: only a second signal stops the run
        super().close()

try:
    with stop_cleanly():
        search(SlowSpace(120.0, started=sys.argv[2]), make_batches(None, 8, 2, 0, resolution=16), iterations=4,
               population=4, generation=2, strategy="random", log_path=sys.argv[1], threads=1, backend=Backend(2))
except Stopped as stop:
    sys.exit(stop.exit_status)
"""


def slow_driver(tmp_path, mode):
    """A library search whose every candidate takes 120 s, once a worker is inside one: (process, workers)."""
    started = tmp_path / "started"
    started.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "log.jsonl"), str(started), mode],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: any(started.iterdir()), proc)
    return proc, descendants(proc.pid)


def test_a_worker_mid_candidate_is_killed_at_once(tmp_path):
    proc, workers = slow_driver(tmp_path, "plain")
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert time.time() - start < 10  # not the 120 s the candidate would take
    proc.stderr.close()
    assert workers and not still_alive(workers)


def test_a_second_ctrl_c_stops_at_once_and_leaves_no_worker(tmp_path):
    proc, workers = slow_driver(tmp_path, "hang")
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # stuck in its clean-up
    start = time.time()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130 and time.time() - start < 5
    assert "stopped at once by a second SIGINT" in proc.stderr.read()
    proc.stderr.close()
    assert workers and not still_alive(workers)


def test_workers_die_with_a_driver_killed_by_sigkill(tmp_path):
    proc, workers = slow_driver(tmp_path, "plain")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert workers and not still_alive(workers)


def test_a_signal_swapped_for_a_plain_keyboard_interrupt_is_reported_as_sent():
    """Ray's C++ wait loop catches the Stopped our handler raises and raises a bare KeyboardInterrupt;
    stop_cleanly gives the caller the signal that arrived (SIGTERM: exit 143, not Ctrl-C's 130)."""
    from zico_fast.clean_stop import Stopped, stop_cleanly

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        with stop_cleanly():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises in this thread at the next bytecode
            except Stopped:
                raise KeyboardInterrupt() from None  # what ray.get does with it
    assert stopped.value.signal_name == "SIGTERM" and stopped.value.exit_status == 143
    with pytest.raises(KeyboardInterrupt) as plain:  # a KeyboardInterrupt no signal caused stays as it is
        with stop_cleanly():
            raise KeyboardInterrupt()
    assert not isinstance(plain.value, Stopped)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
