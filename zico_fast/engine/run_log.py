"""The one run log of search and correlate: a header line (format, kind, settings), then one JSON
record per line. Each record is flushed to the OS as it is appended, so a finished record survives
`kill -9` of the run; it reaches the disk (fsync) at most SYNC_INTERVAL seconds later and at close,
so a machine crash loses at most that much. (An fsync per record cost ~0.5 ms of a search's ~1 ms
per-candidate overhead, for protection only against the machine itself going down.)

Readers never write. A last line without its newline (a kill mid-write) is ignored by readers and
cut only by the writer that resumes the run, which then redoes that record. The writer holds the
log's run lock (run_lock.py) from `open` to `close`, so one run at a time writes a log. A damaged
line elsewhere is an error naming `zico-fast salvage` (salvage.py), which keeps every valid record.
Records are in id order, except those a resume redoes after a salvage dropped them: those follow.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from zico_fast.engine.repro import machine, warn_if_other_machine
from zico_fast.engine.run_lock import RunLock
from zico_fast.errors import ZiCoUserError

FORMAT = "zico_fast.run/1"
SYNC_INTERVAL = 1.0  # seconds between fsyncs of a run log (group commit)


class RunLogError(ZiCoUserError):
    """A log that cannot be read or resumed; the message names the file (and line)."""


def settings_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every setting that differs, nested dicts walked."""
    changes = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += settings_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            changes.append((f"{prefix}{k}", a, b))
    return changes


def salvage_advice(path: Path) -> str:
    return (f"the log is damaged: `zico-fast salvage {path}` keeps every valid record and moves the damaged "
            "file aside, then the same run resumes")


def missing_keys(line, required: tuple[str, ...]) -> list[str]:
    """The required keys a parsed line lacks (all of them when it is not a JSON object)."""
    return [k for k in required if not isinstance(line, dict) or k not in line]


def _parse(path: Path, data: bytes, required: tuple[str, ...]) -> tuple[dict | None, list[dict], int]:
    """(header, records, length of the whole lines) of a log's bytes; the torn tail is left out."""
    *complete, torn = data.split(b"\n")
    header, records = None, []
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunLogError(f"{path}:{number}: not a JSON line ({error}); {salvage_advice(path)}") from None
        if header is None:
            if not isinstance(line, dict) or line.get("format") != FORMAT or not isinstance(line.get("settings"), dict):
                raise RunLogError(f"{path}:{number}: not a {FORMAT} header; this file is not a zico_fast run log "
                                  "(or one of an older version): give another output folder")
            header = line
            continue
        missing = missing_keys(line, required)
        if missing:
            raise RunLogError(f"{path}:{number}: a JSON line without {', '.join(missing)}, not a record of this "
                              f"log; {salvage_advice(path)}")
        records.append(line)
    return header, records, len(data) - len(torn)


def read_run_log(path, required: tuple[str, ...] = ("id",)) -> tuple[dict, list[dict]]:
    """(header, records) of a log, without touching the file; a torn last line is skipped."""
    path = Path(path)
    if not path.is_file():
        raise RunLogError(f"no run log at {path}")
    header, records, _ = _parse(path, path.read_bytes(), required)
    if header is None:
        raise RunLogError(f"{path} is empty; it holds no run")
    return header, records


def stored_settings(path) -> dict:
    """The settings in a log's header; {} when there is no log yet (or only a header torn by a kill)."""
    path = Path(path)
    if not path.is_file():
        return {}
    header = _parse(path, path.read_bytes(), ())[0]
    return header["settings"] if header else {}


class RunLog:
    """The single writer of one log. `open(settings)` checks a resumed log against `settings`
    (naming every difference), cuts a torn tail, and returns the logged records. A new log's header
    is written with its first record, so a run that fails before scoring anything (an impossible
    budget, a worker that cannot start) leaves no log that would refuse the corrected settings."""

    def __init__(self, path, kind: str, required: tuple[str, ...] = ("id",)):
        self.path, self.kind, self.required, self._file, self._header = Path(path), kind, required, None, None
        self._synced = 0.0  # time.monotonic() of the last fsync
        self._lock = None

    def open(self, settings: dict) -> list[dict]:
        """The logged records, with the log's run lock taken (refused if another run holds it)."""
        self._lock = RunLock(self.path).acquire()
        try:
            return self._open(settings)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: dict) -> list[dict]:
        data = self.path.read_bytes() if self.path.is_file() else b""
        header, records, whole = _parse(self.path, data, self.required)
        if header is not None:
            if header.get("kind") != self.kind:
                raise RunLogError(f"{self.path} is a {header.get('kind')} log, not a {self.kind} log; "
                                  "give another output folder")
            old = header["settings"]
            if old != settings:
                changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in settings_changes(old, settings))
                raise RunLogError(f"{self.path} was written with other settings ({changed}); resume with the same "
                                  "settings or give another output folder")
            warn_if_other_machine(header.get("machine"), machine(settings.get("repro", {}).get("device", "cpu")))
        if header is None:  # the machine is a fact beside the settings: another one warns, never refuses
            self._header = {"format": FORMAT, "kind": self.kind, "settings": settings,
                            "machine": machine(settings.get("repro", {}).get("device", "cpu"))}
        elif whole < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(whole)  # the torn tail: that record is redone
        return records

    def describe_run(self, info: dict) -> None:
        """Adds `info` (where the run scores: backend, cluster resources) to a new log's header; a
        resumed log keeps the header of the run that began it (info is not a setting: it may change)."""
        if self._header is not None:
            self._header["backend"] = info

    def append(self, record: dict) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab" if self._header is None else "wb")
            if self._header is not None:
                self._write(self._header)
                self._header = None
            self._write(record)
        except OSError as error:  # a full disk or a folder that cannot be made: say so, keep what is logged
            raise RunLogError(f"cannot write the run log {self.path} ({error.strerror or error}); the records "
                              "written before this one are kept: make room or choose another place, then run "
                              "again to resume") from None

    def _write(self, line: dict) -> None:
        self._file.write((json.dumps(line) + "\n").encode())
        self._file.flush()
        if time.monotonic() - self._synced >= SYNC_INTERVAL:
            self.sync()

    def sync(self) -> None:
        """Everything appended so far onto the disk."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Everything appended onto the disk, then the lock released (closing twice is harmless)."""
        try:
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    file.flush()  # a record whose flush a signal interrupted is still in the buffer
                    os.fsync(file.fileno())
                finally:
                    file.close()
        except OSError as error:
            raise RunLogError(f"cannot write the run log {self.path} ({error.strerror or error}); the records "
                              "written before are kept: make room, then run again to resume") from None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
