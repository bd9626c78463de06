"""The life of a local scoring process: tied to its parent's (a run killed with -9 cannot stop its
workers, and they would score on for ever), and the cause of its death in words."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time


def die_with_parent(parent: int) -> None:
    """Called first in a worker's main thread: the kernel kills this process when its parent dies
    (Linux PR_SET_PDEATHSIG), even mid-candidate in native code; elsewhere, and for a parent that
    died before that took effect, a thread watching the parent's pid ends it within a second."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watch is the only guard
        pass
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def death_cause(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
