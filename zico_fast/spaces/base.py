"""The interface every search space implements; the search and the CLI only talk to this."""
from __future__ import annotations

import abc
import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cost:
    """Analytic cost of a candidate, computed from its string before anything is built."""

    params: int  # trainable parameters of the built network
    flops: int  # multiply-accumulates of one forward pass of one image
    depth: int  # the space's depth measure (NB201: cells; MobileNet space: total sub_layers)


class SearchSpace(abc.ABC):
    """A family of architectures named by strings.

    Users plug in their own space by subclassing this (or passing any object with these
    methods) to `zico_fast.search`; nothing in the package needs to change.
    """

    name: str = "custom"

    @abc.abstractmethod
    def canonical(self, arch: str) -> str:
        """Validate `arch` and return its canonical spelling; raise ValueError saying what is wrong."""

    @abc.abstractmethod
    def initial(self, rng: random.Random) -> str:
        """The structure an evolutionary search starts from."""

    @abc.abstractmethod
    def random(self, rng: random.Random) -> str:
        """A random candidate (the random-search baseline samples these)."""

    @abc.abstractmethod
    def mutate(self, arch: str, rng: random.Random, num_blocks: int = 1) -> str:
        """A child of `arch` with `num_blocks` randomly chosen blocks (NB201: edges) replaced."""

    @abc.abstractmethod
    def build(self, arch: str) -> torch.nn.Module:
        """The untrained network, default PyTorch initialisation, in train mode."""

    @abc.abstractmethod
    def cost(self, arch: str) -> Cost:
        """Analytic params / FLOPs / depth of `arch`."""
