"""One writer per run: an exclusive lock on `<file>.lock` beside a run's log (or `score --out` file),
held for the run's life. It is an flock, so the operating system drops it when the holder dies,
even by `kill -9`: a lock file left behind by a killed run is never a stale lock, only a file.

The holder writes its pid, host, start time and command line into the lock file, so a second run
refused by the lock names the run that holds it. One thread may take the same lock again (the CLI
holds it around the whole command, the run log takes it again inside); any other taker is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from zico_fast.errors import ZiCoUserError


class RunLockedError(ZiCoUserError):
    """Another run holds the lock of this file."""


_held: dict[Path, "RunLock"] = {}  # lock path -> the lock this process holds on it
_held_guard = threading.Lock()


def lock_path(target) -> Path:
    target = Path(target)
    return target.with_name(target.name + ".lock")


def _holder_text(info: dict) -> str:
    if not info:
        return "another run (it is writing its details just now)"
    return (f"another run: pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}, "
            f"command: {info.get('command')}")


class RunLock:
    """`with RunLock(path):` holds the lock of `path` (a log or an output file); refused at once
    with RunLockedError, changing nothing, when another run holds it."""

    def __init__(self, target):
        self.target = Path(target)
        self.path = lock_path(self.target).absolute()
        self._fd, self._depth, self._made, self._delegate = None, 0, [], None

    def acquire(self) -> "RunLock":
        with _held_guard:
            holder = _held.get(self.path)
            if holder is not None:
                if holder._thread != threading.get_ident():
                    raise RunLockedError(f"{self.target} is in use by another thread of this process (pid "
                                         f"{os.getpid()}); one run per file at a time")
                holder._depth += 1
                self._delegate = holder
                return self
            self._delegate, self._made = None, []
            try:
                self._made = _make_folders(self.path.parent)
                self._fd = _lock_fd(self.path, self.target)
            except BaseException as error:
                _remove_empty(self._made)
                if isinstance(error, OSError):
                    raise ZiCoUserError(f"cannot lock {self.target}: {self.path} cannot be created "
                                        f"({error.strerror or error}); give a folder you can write to") from None
                raise
            self._depth, self._pid, self._thread = 1, os.getpid(), threading.get_ident()
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                    "command": shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])}
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)
            _held[self.path] = self
        return self

    def release(self) -> None:
        with _held_guard:
            owner = self._delegate or self
            if owner._fd is None or owner._pid != os.getpid():
                return  # a forked child shares the parent's lock; unlocking it would free the parent's run
            owner._depth -= 1
            if owner._depth:
                return
            os.unlink(owner.path)  # while still locked, so nobody locks a file that is going away
            os.close(owner._fd)  # drops the flock
            owner._fd = None
            _held.pop(owner.path, None)
            _remove_empty(owner._made)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_fd(path: Path, target: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            try:
                info = json.loads(text)
            except json.JSONDecodeError:
                info = {}
            raise RunLockedError(f"{target} is in use by {_holder_text(info)}; wait for that run to end or stop "
                                 "it (a stopped run resumes), then run again") from None
        # The holder before us unlinks the file as it releases: if it did so between our open and our
        # flock, we locked a file nobody else will open, so open the path again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _make_folders(folder: Path) -> list[Path]:
    """Creates `folder` and its missing parents; returns those this call made, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    made = []
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:  # made by a run starting beside this one: not ours to remove
            continue
        made.insert(0, f)
    return made


def _remove_empty(folders: list[Path]) -> None:
    """A run that wrote nothing leaves no folder it made (the next run's checks see none)."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return
