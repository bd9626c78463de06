"""The fixed fit/report split of benchmark rows: ensemble choices are made on "fit" rows only.

A row's half is a function of its benchmark index alone (sha256 of "zico-fast/split/<index>", first
byte even = fit), so it is stable across runs, row orders and subsets, and can be recomputed anywhere.
"""
from __future__ import annotations

import hashlib


def split_of(index: int) -> str:
    """'fit' or 'report' for a benchmark row index (NB201: the NATS-Bench-TSS arch_index)."""
    digest = hashlib.sha256(f"zico-fast/split/{int(index)}".encode()).digest()
    return "fit" if digest[0] % 2 == 0 else "report"
