"""The base of every proxy tap: hooks that never raise, and the reason each undefined proxy is NaN."""
from __future__ import annotations

import math


class Tap:
    """Hooks made with `guarded` run only while `active` (the first batch, for forward taps), and an
    exception inside one marks this tap's proxies NaN with the exception as the reason, instead of
    reaching the caller's forward or backward: a proxy must never stop ZiCo's scoring.
    `reasons` maps a proxy to why it is NaN (the first reason found is kept)."""

    proxies: tuple[str, ...] = ()

    def __init__(self):
        self.active = False
        self.reasons: dict[str, str] = {}
        self._handles: list = []

    def fail(self, reason: str, names: tuple[str, ...] | None = None) -> None:
        for name in names or self.proxies:
            self.reasons.setdefault(name, reason)

    def value(self, name: str, compute) -> float:
        """`compute()` as a float, or NaN when `name` already has a reason."""
        return math.nan if name in self.reasons else float(compute())

    def guarded(self, hook, always: bool = False):
        def run(*args):
            if not (always or self.active):
                return None
            try:
                hook(*args)
            except Exception as exc:  # recorded as the reason; the scoring pass goes on untouched
                self.fail(f"{type(exc).__name__} in the {hook.__name__.strip('_')} hook: {str(exc)[:200]}")
            return None  # a hook that returns None leaves the output (or gradient) as it was

        return run

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
