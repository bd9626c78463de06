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

    Spaces whose build takes `device` (nb201, mobilenet) create the network there directly, with
    the same CPU draws and so the same bits; others are built on the CPU and moved."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, space.key(arch)))
        if "device" in inspect.signature(space.build).parameters:
            return space.build(arch, device=torch.device(device or "cpu"))
        model = space.build(arch)
    return model if device is None else model.to(device)


def proposal_rng(seed: int, iteration: int) -> random.Random:
    """Each search iteration draws from its own stream, so a resume needs no stored generator state."""
    return random.Random(f"zico-fast/search/{seed}/{iteration}")
