"""Search spaces by name; a user's own space is any `SearchSpace` subclass (no registration needed)."""
import importlib

from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import Cost, NumberedSpace, SearchSpace

#: name -> "module:class"; the CLI offers exactly these names.
SPACES = {
    "nb201": "zico_fast.spaces.nb201:NB201Space",  # NAS-Bench-201 / NATS-Bench topology, CIFAR
    "nb101": "zico_fast.spaces.nb101:NB101Space",  # NAS-Bench-101, CIFAR
    "darts": "zico_fast.spaces.darts:DartsSpace",  # DARTS / NAS-Bench-301 cells, CIFAR
    "sss": "zico_fast.spaces.sss:SSSSpace",  # NATS-Bench size space (channel counts), CIFAR
    "mobilenet": "zico_fast.spaces.mobilenet:MobileNetSpace",  # the paper's ImageNet space
}


def get_space(name: str, **options) -> SearchSpace:
    """The space registered as `name` (see SPACES), built with `options`."""
    if name not in SPACES:
        raise ZiCoUserError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}, "
                            "or pass a SearchSpace object")
    module, cls = SPACES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["Cost", "NumberedSpace", "SearchSpace", "SPACES", "get_space"]
