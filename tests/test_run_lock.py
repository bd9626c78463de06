"""The run lock (one writer per log): refused across processes and threads naming the holder, taken
again by the thread that holds it, never freed by a forked child, freed by the OS when its holder is
killed with -9, and leaving no lock file or folder behind after a run that wrote nothing."""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from zico_fast.engine import RunLog
from zico_fast.engine.run_lock import RunLock, RunLockedError, lock_path

HOLD = """
import sys, time
from zico_fast.engine.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""

TRY = """
import sys
from zico_fast.engine.run_lock import RunLock, RunLockedError
try:
    RunLock(sys.argv[1]).acquire().release()
except RunLockedError as error:
    print(error)
    sys.exit(3)
"""


def holder(target):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def try_in_another_process(target) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY, str(target)], capture_output=True, text=True, timeout=60)


def test_a_second_process_is_refused_naming_the_holder_until_it_is_killed(tmp_path):
    log = tmp_path / "search.jsonl"
    log.write_text("the run's records\n")
    proc = holder(log)
    try:
        info = json.loads(lock_path(log).read_text())
        assert info["pid"] == proc.pid and info["host"] and "T" in info["started"] and "HOLD" not in info["command"]
        with pytest.raises(RunLockedError, match=rf"in use by another run: pid {proc.pid} on .*, started "):
            RunLock(log).acquire()
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            RunLog(log, "search").open({})  # the library's writer takes it too
        assert log.read_text() == "the run's records\n"  # the refused writer changed nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert lock_path(log).exists()  # the killed holder's file stays, but the OS dropped its lock
    with RunLock(log):
        assert json.loads(lock_path(log).read_text())["pid"] == os.getpid()
    assert not lock_path(log).exists()


def test_the_holding_thread_may_take_it_again_and_other_threads_may_not(tmp_path):
    log = tmp_path / "x.jsonl"
    errors = []

    def other():
        try:
            RunLock(log).acquire()
        except RunLockedError as error:
            errors.append(str(error))

    with RunLock(log):
        with RunLock(log):  # the CLI holds it around the command, the run log takes it inside
            pass
        assert lock_path(log).exists()  # still held by the outer one
        assert try_in_another_process(log).returncode == 3
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors and "another thread of this process" in errors[0]
    assert try_in_another_process(log).returncode == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_never_frees_the_parents_lock(tmp_path):
    log = tmp_path / "x.jsonl"
    with RunLock(log) as lock:
        pid = os.fork()
        if pid == 0:  # the child shares the lock's open file; releasing it there must not unlock the parent
            lock.release()
            os._exit(0)
        os.waitpid(pid, 0)
        done = try_in_another_process(log)
        assert done.returncode == 3 and f"pid {os.getpid()}" in done.stdout


def test_a_run_that_writes_nothing_leaves_no_folder_or_lock(tmp_path):
    log = RunLog(tmp_path / "new" / "deeper" / "search.jsonl", "search")
    log.open({"seed": 1})
    assert (tmp_path / "new" / "deeper" / "search.jsonl.lock").exists()
    log.close()
    assert not (tmp_path / "new").exists()
