"""The CLI's --out folders: checked before any work without writing anything, never holding someone
else's files a run would overwrite, and the run's summary files written with one clear error if the
disk refuses them (the run log, written as the run goes, keeps everything scored)."""
from __future__ import annotations

import os
from pathlib import Path

from zico_fast.errors import ZiCoUserError


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
