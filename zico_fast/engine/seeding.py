"""The one seed rule: a network's initial weights depend only on (seed, the space's key of the arch).

`score --seed S`, a search with seed S and correlate with seed S therefore build bit-identical
networks for the same architecture, whatever the order, worker or command that builds them.
"""
from __future__ import annotations

import hashlib
import random

import torch


def init_seed(seed: int, key: str) -> int:
    """The torch seed (63 bits) that initialises the architecture with canonical key `key`."""
    digest = hashlib.sha256(f"zico-fast/init/{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_seeded(space, arch: str, seed: int) -> torch.nn.Module:
    """`space.build(arch)` under the seed rule, leaving the caller's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, space.key(arch)))
        return space.build(arch)


def proposal_rng(seed: int, iteration: int) -> random.Random:
    """Each search iteration draws from its own stream, so a resume needs no stored generator state."""
    return random.Random(f"zico-fast/search/{seed}/{iteration}")
