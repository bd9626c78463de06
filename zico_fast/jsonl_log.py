"""Append-only JSON-lines logs that survive `kill -9`: whole lines are kept, a torn one is cut."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_lines(path: Path) -> list[dict]:
    """Every whole JSON line of `path` ([] when it is absent or empty).

    A kill in the middle of a write leaves a last line without its newline: it is cut from the
    file, so the writer redoes that record. A damaged line before the end raises ValueError.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    *complete, torn = data.split(b"\n")
    if torn:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(torn))
    return [json.loads(line) for line in complete if line.strip()]


def settings_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every setting that differs, sorted by key."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class AppendLog:
    """Appends one JSON line per record, flushed and fsynced: once written it survives a crash."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def append(self, record: dict) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        self._file.write((json.dumps(record) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
