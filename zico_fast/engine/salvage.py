"""Repairing a damaged run log (`zico-fast salvage`): every valid record is kept, the damaged
original is moved aside under a new name (never overwritten), and the repaired log replaces it
atomically, so the same run then resumes and scores only the records that were lost.

A valid record is a JSON object with the keys every record of its kind has. A line holding several
records run together (two writers, or a record written over a torn one) keeps each whole record it
holds; the rest of a damaged line is dropped and counted. When an id appears twice, the first is
kept. The header (the run's settings) must be intact: without it no run could resume the records.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from zico_fast.engine.run_lock import RunLock
from zico_fast.engine.run_log import FORMAT, RunLogError, missing_keys

# The keys every record of a log kind has (as its writer's RunLog `required`); another kind: "id".
REQUIRED = {"search": ("id", "arch", "score"), "correlate": ("id", "arch", "score"),
            "scorer": ("id", "arch", "key", "score")}
_DECODER = json.JSONDecoder()


@dataclass
class SalvageReport:
    log: Path
    kept: int  # records in the repaired log
    damaged_lines: list[int] = field(default_factory=list)  # line numbers (1-based) with anything dropped
    split_lines: list[int] = field(default_factory=list)  # lines that held several records, all kept
    dropped_fragments: int = 0  # pieces of damaged lines that were not whole records
    repeated: int = 0  # records whose id an earlier record already had
    moved_to: Path | None = None  # the damaged original; None when there was nothing to repair


def _is_record(value, required: tuple[str, ...]) -> bool:
    return not missing_keys(value, required) and type(value["id"]) is int and value["id"] >= 0


def _records_in(text: str, required: tuple[str, ...]) -> tuple[list[dict], int]:
    """The whole records in one line and the number of pieces that were not: each record is decoded
    where a JSON object starts, so a torn record before a whole one costs only itself."""
    records, dropped, pos, in_junk = [], 0, 0, False
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        found = None
        if text[pos] == "{":
            try:
                value, end = _DECODER.raw_decode(text, pos)
                if _is_record(value, required):
                    found = value, end
            except json.JSONDecodeError:
                pass
        if found:
            records.append(found[0])
            pos, in_junk = found[1], False
        else:
            dropped += not in_junk  # a run of junk is one fragment
            in_junk = True
            pos = text.find("{", pos + 1)
            if pos < 0:
                break
    return records, dropped


def salvage(log) -> SalvageReport:
    """Repairs `log` in place (see the module's text); takes the log's run lock for the repair."""
    log = Path(log)
    if not log.is_file():
        raise RunLogError(f"no run log at {log}")
    with RunLock(log):
        data = log.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        try:
            header = json.loads(lines[0]) if lines else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not (isinstance(header, dict) and header.get("format") == FORMAT
                and isinstance(header.get("settings"), dict)):
            raise RunLogError(f"{log}:1: not a {FORMAT} header, so the run's settings are lost and no run could "
                              "resume these records; start the run in another folder")
        required = REQUIRED.get(header.get("kind"), ("id",))
        report = SalvageReport(log, 0)
        kept, seen = [], set()
        for number, raw in enumerate(lines[1:], start=2):
            text = raw.decode("utf-8", errors="replace")
            if not text.strip():
                continue
            try:
                whole = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                whole = None
            if _is_record(whole, required):
                found, dropped = [whole], 0
            else:
                found, dropped = _records_in(text, required)
            if dropped or not found:
                report.damaged_lines.append(number)
            elif len(found) > 1:
                report.split_lines.append(number)
            report.dropped_fragments += dropped
            for record in found:
                if record["id"] in seen:
                    report.repeated += 1
                    continue
                seen.add(record["id"])
                kept.append(record)
        report.kept = len(kept)
        if not (report.damaged_lines or report.split_lines or report.repeated or not data.endswith(b"\n")):
            return report  # nothing to repair: the log is left as it is
        kept.sort(key=lambda r: r["id"])
        repaired = b"".join((json.dumps(line) + "\n").encode() for line in [header, *kept])
        report.moved_to = _replace_keeping_original(log, repaired)
    return report


def _replace_keeping_original(log: Path, repaired: bytes) -> Path:
    """Writes `repaired` over `log` atomically; the original stays under a new name. Returns that name."""
    temporary = log.with_name(f".{log.name}.salvage-{os.getpid()}")
    with open(temporary, "wb") as f:
        f.write(repaired)
        f.flush()
        os.fsync(f.fileno())
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        aside = log.with_name(f"{log.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        try:
            os.link(log, aside)  # fails rather than overwrite; the log's path holds the original meanwhile
            break
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: move it (the name was free a moment ago)
            if not aside.exists():
                os.rename(log, aside)
                break
    else:
        raise RunLogError(f"cannot find a free name for the damaged copy of {log}; move old .damaged-* files away")
    os.replace(temporary, log)
    folder = os.open(log.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself onto the disk
    finally:
        os.close(folder)
    return aside
