"""Clean stops of the command line's runs on Ctrl-C (SIGINT) and `kill` (SIGTERM, as job schedulers
send it): the first signal raises Stopped in the main thread, so the run stops handing out work, its
`finally` blocks kill the worker processes or Ray actors and close the log whole, and the CLI says
how to resume (exit status 128 + the signal: 130, 143). A second signal ends the process at once,
after killing its child processes, so nothing it started goes on scoring.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal; a KeyboardInterrupt, so code that handles Ctrl-C handles it too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal_name, self.exit_status = signal.Signals(signum).name, 128 + signum


def _children() -> list[int]:
    """This process's child processes (Linux /proc; elsewhere those multiprocessing started)."""
    pids = []
    for task in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in task.read_text().split()]
    return pids or [p.pid for p in multiprocessing.active_children()]


def _stop_now(signum, frame) -> None:
    for pid in _children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os.write(2, f"\nstopped at once by a second {signal.Signals(signum).name}; run the same command again to "
                "resume (a record cut short is redone)\n".encode())
    os._exit(128 + signum)


_received: list[int] = []  # the signal that began the current clean stop (main thread only)


def _stop(signum, frame) -> None:
    for s in SIGNALS:
        signal.signal(s, _stop_now)
    _received.append(signum)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_cleanly():
    """Within this block, SIGINT and SIGTERM stop the run cleanly (see the module's text). Signal
    handlers belong to the main thread: called from another thread, the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop) for s in SIGNALS}
    _received.clear()
    try:
        yield
    except KeyboardInterrupt as interrupt:
        # Ray's C++ wait loop (ray.get/ray.wait) catches the Stopped our handler raised and raises a
        # plain KeyboardInterrupt instead: give the caller back the signal that really arrived.
        if _received and not isinstance(interrupt, Stopped):
            raise Stopped(_received[0]) from None
        raise
    finally:
        _received.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)
