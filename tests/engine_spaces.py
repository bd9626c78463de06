"""Spaces for the engine's tests, in an importable module so spawned workers can unpickle them."""
import os
import signal

from zico_fast.spaces.nb201 import NB201Space


class CrashingSpace(NB201Space):
    """A tiny NB201 whose networks with an index divisible by `every` crash the process natively
    (SIGSEGV, as a broken C++ kernel would) when built."""

    def __init__(self, every: int = 3):
        super().__init__(C=4, N=1, resolution=16)
        self.every = every

    def crashes(self, arch: str) -> bool:
        return self.index_of(arch) % self.every == 0

    def build(self, arch):
        if self.crashes(arch):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().build(arch)


class KilledOnceSpace(NB201Space):
    """A tiny NB201 whose network `victim` (an index) kills its scoring process with SIGKILL the
    first time it is built, as a kill from outside or the OOM killer would; `marker` (a file path)
    remembers across processes that it happened, so the retry scores normally."""

    def __init__(self, victim: int, marker: str):
        super().__init__(C=4, N=1, resolution=16)
        self.victim, self.marker = victim, marker

    def build(self, arch):
        if self.index_of(arch) == self.victim and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().build(arch)


class SlowSpace(NB201Space):
    """A tiny NB201 that takes `delay` seconds to build each network: a run long enough to kill.
    With `started` (a folder), each build first leaves a file named by its process id there, so a
    test knows a worker is inside a candidate."""

    def __init__(self, delay: float = 0.3, started: str | None = None):
        super().__init__(C=4, N=1, resolution=16)
        self.delay, self.started = delay, started

    def build(self, arch):
        import time

        if self.started:
            open(os.path.join(self.started, str(os.getpid())), "w").close()
        time.sleep(self.delay)
        return super().build(arch)
