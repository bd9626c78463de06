"""The interface every search space implements; the search and the CLI only talk to this."""
from __future__ import annotations

import abc
import numbers
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

    Users plug in their own space by subclassing this and passing an instance to
    `zico_fast.search.search` or `zico_fast.correlate.correlate`; nothing in the package needs to change.
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
        """The untrained network, default PyTorch initialisation, in train mode. A space may add a
        `device=None` parameter to build directly on a device, and `seed=None` to draw its weights
        natively as `torch.manual_seed(seed)` would (the engine then uses them); its weights must be
        the bits a CPU build draws under the same torch seed."""

    @abc.abstractmethod
    def cost(self, arch: str) -> Cost:
        """Analytic params / FLOPs / depth of `arch`."""

    # What every space supports, with defaults a space overrides where it knows better.
    has_index: bool = False  # True when the space numbers its architectures (index_of / arch_from_index)

    def key(self, arch: str) -> str:
        """The canonical key of `arch`: the seed rule initialises a network from (seed, key), so two
        spellings of one architecture get the same weights."""
        return self.canonical(arch)

    def within_budget(self, arch: str, max_flops: float | None = None, max_params: float | None = None,
                      max_depth: int | None = None) -> bool:
        """Whether `arch` fits the budget (None: unbounded); by default its analytic `cost`."""
        cost = self.cost(arch)
        return ((max_flops is None or cost.flops <= max_flops) and (max_params is None or cost.params <= max_params)
                and (max_depth is None or cost.depth <= max_depth))

    def index_of(self, arch: str) -> int:
        """The benchmark's index of `arch` (spaces with `has_index`)."""
        raise NotImplementedError(f"the {self.name} space does not number its architectures")

    def arch_from_index(self, index: int) -> str:
        """The architecture with benchmark index `index` (spaces with `has_index`)."""
        raise NotImplementedError(f"the {self.name} space does not number its architectures")

    def settings(self) -> dict:
        """What identifies this space's networks in a run log: its class and public scalar options."""
        options = {k: v for k, v in sorted(vars(self).items())
                   if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}", "options": options}


class NumberedSpace(SearchSpace):
    """A space its benchmark numbers 0..size-1 (NB201, SSS): random draws, the initial structure and
    the listing all come from the numbering, so a seeded draw is the same index in every space."""

    has_index = True
    size: int  # how many architectures the benchmark numbers

    @abc.abstractmethod
    def index_of(self, arch: str) -> int:
        """The benchmark's index of `arch`."""

    @abc.abstractmethod
    def arch_from_index(self, index: int) -> str:
        """The architecture with benchmark index `index` (pass it through `checked_index` first)."""

    def checked_index(self, index) -> int:
        """`index` as an int if it is an integer (numpy's too) in 0..size-1; else a ValueError that
        gives the range."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < self.size:
            raise ValueError(f"{self.name} index must be in 0..{self.size - 1}, got {index!r}")
        return int(index)

    def enumerate(self):
        """Every architecture, in benchmark index order."""
        return (self.arch_from_index(i) for i in range(self.size))

    def random(self, rng: random.Random) -> str:
        return self.arch_from_index(rng.randrange(self.size))

    def initial(self, rng: random.Random) -> str:
        return self.random(rng)
