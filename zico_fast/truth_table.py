"""A ground-truth table as `correlate` reads it (rows of architecture, accuracy and other proxies'
scores) and its error; shared by the CSV reader (truth.py) and the NASLib JSON reader (truth_naslib.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zico_fast.errors import ZiCoUserError


class TruthError(ZiCoUserError):
    """A ground-truth file that cannot be used; the message names the file and line."""


@dataclass
class TruthRow:
    arch_index: int
    arch: str  # canonical spelling
    truth: float
    compare: dict[str, float] = field(default_factory=dict)
    line: int = 0


@dataclass
class Truth:
    path: Path
    column: str
    compare_columns: list[str]
    rows: list[TruthRow]
    sha256: str
