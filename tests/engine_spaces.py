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
