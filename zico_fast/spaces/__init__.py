"""Search spaces by name; a user's own space is any `SearchSpace` subclass (no registration needed)."""
from zico_fast.spaces.base import Cost, SearchSpace


def get_space(name: str, **options) -> SearchSpace:
    """`nb201` (NAS-Bench-201 / NATS-Bench topology, CIFAR), `nb101` (NAS-Bench-101, CIFAR) or `mobilenet`
    (the paper's ImageNet space)."""
    if name == "nb201":
        from zico_fast.spaces.nb201 import NB201Space

        return NB201Space(**options)
    if name == "nb101":
        from zico_fast.spaces.nb101 import NB101Space

        return NB101Space(**options)
    if name == "mobilenet":
        from zico_fast.spaces.mobilenet import MobileNetSpace

        return MobileNetSpace(**options)
    raise ValueError(f"unknown search space {name!r}; choose 'nb201', 'nb101' or 'mobilenet', "
                     "or pass a SearchSpace object")


__all__ = ["Cost", "SearchSpace", "get_space"]
