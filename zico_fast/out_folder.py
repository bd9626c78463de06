"""The CLI's --out folders: checked before any work without writing anything, never holding someone
else's files a run would overwrite, the run's summary files written with one clear error if the
disk refuses them (the run log, written as the run goes, keeps everything scored), and the
`salvage` command that repairs a folder's damaged run log."""
from __future__ import annotations

import os
from pathlib import Path

from zico_fast.errors import ZiCoUserError

SEARCH_LOG, CORRELATE_LOG = "search.jsonl", "scores.jsonl"


def writable_folder(folder: Path, flag: str = "--out") -> Path:
    """Check, before any work and without writing anything, that `folder` is or can become a folder
    this process writes in (the run makes it only once its inputs have passed their checks)."""
    if folder.exists() and not folder.is_dir():
        raise ZiCoUserError(f"{flag} {folder} is a file, not a folder; give a folder name")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ZiCoUserError(f"cannot make {flag} folder {folder}: {existing} is a file; give another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ZiCoUserError(f"cannot write in {existing} (for {flag} {folder}); give a folder you can write to")
    return folder


def run_folder(folder: Path, log_name: str, outputs: tuple[str, ...]) -> Path:
    """A writable --out whose output files, if any, are this run's: without the run log there, a
    file named like an output is the user's, and a new run would overwrite it."""
    writable_folder(folder)
    if not (folder / log_name).exists():
        theirs = [name for name in outputs if (folder / name).exists()]
        if theirs:
            raise ZiCoUserError(f"--out {folder} already holds {', '.join(theirs)} but no {log_name}, so not from a "
                                f"run to resume; a new run would overwrite {'it' if len(theirs) == 1 else 'them'}: give another "
                                "folder or move them")
    return folder


def write_outputs(write, result, out: Path, data: dict, log: Path) -> list[str]:
    """The summary files of a finished run; if the disk refuses them, the complete log still holds the run."""
    try:
        return write(result, out, data)
    except OSError as error:
        raise ZiCoUserError(f"cannot write the outputs in {out} ({error.strerror or error}); the run itself is "
                            f"complete in {log}: make room and run the same command again to write them") from None


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all: a kill mid-write leaves the previous file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def salvage(args) -> int:
    """`zico-fast salvage LOG|DIR`: keeps every valid record of a damaged run log (engine/salvage.py)."""
    from zico_fast.engine.salvage import salvage as repair

    path = Path(args.log)
    if path.is_dir():
        logs = [path / name for name in (SEARCH_LOG, CORRELATE_LOG) if (path / name).is_file()]
        if len(logs) != 1:
            raise ZiCoUserError(f"{path} holds {'no run log' if not logs else 'two run logs'} ({SEARCH_LOG} or "
                                f"{CORRELATE_LOG}); give the log file itself")
        path = logs[0]
    report = repair(path)
    if report.moved_to is None:
        print(f"{path}: {report.kept} records, nothing damaged; left as it is")
        return 0
    parts = [f"kept {report.kept} records"]
    if report.damaged_lines:
        parts.append(f"dropped {report.dropped_fragments} damaged piece(s) of line(s) "
                     f"{', '.join(map(str, report.damaged_lines))}")
    if report.split_lines:
        parts.append(f"split line(s) {', '.join(map(str, report.split_lines))} holding several records")
    if report.repeated:
        parts.append(f"dropped {report.repeated} repeated record(s) (the first of each id is kept)")
    print(f"{path}: {'; '.join(parts)}.\nThe damaged original is {report.moved_to}. Run the same command as "
          "before to resume: it scores only the records that were lost.")
    return 0
