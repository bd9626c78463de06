"""The one seed rule: a network's initial weights depend only on (seed, the space's key of the arch).

`score --seed S`, a search with seed S and correlate with seed S therefore build bit-identical
networks for the same architecture, whatever the order, worker or command that builds them.
"""
from __future__ import annotations

import hashlib
import inspect
import random

import torch


def init_seed(seed: int, key: str) -> int:
    """The torch seed (63 bits) that initialises the architecture with canonical key `key`."""
    digest = hashlib.sha256(f"zico-fast/init/{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_seeded(space, arch: str, seed: int, device=None) -> torch.nn.Module:
    """`space.build(arch)` under the seed rule, on `device`, leaving the caller's global RNG untouched.

    Spaces whose build takes `device` and `seed` (nb201, mobilenet) create the network there
    directly and draw its weights from a private stream equal to torch.manual_seed's (same bits, no
    global state); others are built on the CPU under a forked generator and moved."""
    parameters = inspect.signature(space.build).parameters
    if "seed" in parameters:
        return space.build(arch, device=torch.device(device or "cpu"), seed=init_seed(seed, space.key(arch)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, space.key(arch)))
        if "device" in parameters:
            return space.build(arch, device=torch.device(device or "cpu"))
        model = space.build(arch)
    return model if device is None else model.to(device)


class CandidateBuilder:
    """A scoring worker's builds under the seed rule. With `reuse`, where the space offers it
    (`space.reusing_builder`, NB201), one network's modules serve every candidate: the same bits and
    module names as build_seeded, for a fraction of the host time; the caller must be done with each
    network before building the next (a scoring worker is)."""

    def __init__(self, space, seed: int, device, reuse: bool = True):
        self.space, self.seed, self.device = space, seed, torch.device(device or "cpu")
        self.reuse = reuse and hasattr(space, "reusing_builder")
        self._reused = None

    def build(self, arch: str, weights_seed: int | None = None) -> torch.nn.Module:
        """`arch` under the seed rule; `weights_seed`: its init_seed, when the caller has it already."""
        if self.reuse and self._reused is None:
            self._reused = self.space.reusing_builder(self.device)
            self.reuse = self._reused is not None
        if not self.reuse:
            return build_seeded(self.space, arch, self.seed, self.device)
        if weights_seed is None:
            weights_seed = init_seed(self.seed, self.space.key(arch))
        return self._reused.build(arch, weights_seed)

    def discard(self) -> None:
        """Forget the reused modules (after a failed candidate): the next build starts afresh."""
        self._reused = None


def proposal_rng(seed: int, iteration: int) -> random.Random:
    """Each search iteration draws from its own stream, so a resume needs no stored generator state."""
    return random.Random(f"zico-fast/search/{seed}/{iteration}")
