"""Which weights ZiCo scores: the authors' Conv2d + Linear set by default, or the user's choice."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import nn

from zico_fast.errors import ZiCoUserError

#: The authors' layer set: every Conv2d (depthwise, pointwise, stem) and Linear; weights only.
DEFAULT_LAYER_TYPES = (nn.Conv2d, nn.Linear)

LayerSelector = Union[None, type, Sequence[type], Callable[[str, nn.Module], bool]]


@dataclass
class SelectedLayer:
    name: str  # the module's qualified name in the model ("" for the model itself)
    weight: nn.Parameter


def _matcher(layers: LayerSelector) -> Callable[[str, nn.Module], bool]:
    if layers is None:
        layers = DEFAULT_LAYER_TYPES
    if isinstance(layers, type):
        layers = (layers,)
    if isinstance(layers, (tuple, list)):
        types = tuple(layers)
        if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise TypeError(f"layers must be nn.Module types or a predicate(name, module) -> bool, got {layers!r}")
        return lambda name, module: isinstance(module, types)
    if callable(layers):
        return layers
    raise TypeError(f"layers must be nn.Module types or a predicate(name, module) -> bool, got {layers!r}")


def named_modules_fast(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """`list(model.named_modules())` (same order, same de-duplication) for a fraction of the cost:
    an explicit stack instead of nested generators, which matters when scoring small models."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append((name, module))
        prefix = name + "." if name else ""
        stack.extend((prefix + key, child) for key, child in reversed(module._modules.items()) if child is not None)
    return out


def select_layers(model: nn.Module, layers: LayerSelector = None,
                  named: list[tuple[str, nn.Module]] | None = None,
                  allow_none: bool = False) -> tuple[list[SelectedLayer], dict[str, str]]:
    """The weights to score, and the matching layers that were left out with the reason why.

    A weight shared by several modules is scored once, under the first module's name; frozen
    weights (requires_grad=False) are left out, as are matching modules without a weight tensor.
    `named`: the model's named modules when the caller has walked them already (or a part of
    them, with `allow_none`: then selecting nothing is no error).
    """
    matches = _matcher(layers)
    selected: list[SelectedLayer] = []
    skipped: dict[str, str] = {}
    owner_of: dict[int, str] = {}
    for name, module in (named_modules_fast(model) if named is None else named):
        if not matches(name, module):
            continue
        if is_computed_weight(module):  # checked first: reading a parametrized weight runs it
            raise computed_weight_error(name)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            skipped[name] = "has no weight tensor"
        elif not weight.is_leaf:  # e.g. a property computing the weight from parameters
            raise computed_weight_error(name)
        elif id(weight) in owner_of:
            skipped[name] = f"shares its weight with {owner_of[id(weight)]!r} (counted once)"
        elif not weight.requires_grad:
            skipped[name] = "frozen (requires_grad=False)"
        else:
            owner_of[id(weight)] = name
            selected.append(SelectedLayer(name, weight))
    if not selected and not allow_none:
        raise no_scorable_layer(layers)
    return selected, skipped


def is_computed_weight(module: nn.Module) -> bool:
    """True when `module.weight` is recomputed from other tensors instead of being a parameter:
    torch.nn.utils.parametrize (checked without reading the weight, since reading it runs the
    parametrization, and spectral_norm's then updates its buffers), or a plain tensor attribute
    that hooks rewrite (the old-style weight_norm / spectral_norm). A weight buffer is not: it is
    left out as frozen."""
    parametrizations = module._modules.get("parametrizations")
    if parametrizations is not None and "weight" in parametrizations._modules:
        return True
    weight = module.__dict__.get("weight")
    return isinstance(weight, torch.Tensor) and not isinstance(weight, nn.Parameter)


def computed_weight_error(name: str) -> ZiCoUserError:
    return ZiCoUserError(
        f"layer {name!r} has a computed weight (weight_norm, spectral_norm, a pruning mask or another "
        "parametrization), whose gradient autograd never stores in .grad, so ZiCo cannot read it; score a "
        "copy without it (torch.nn.utils.parametrize.remove_parametrizations(module, 'weight'); "
        "torch.nn.utils.prune.remove(module, 'weight'); remove_weight_norm / remove_spectral_norm for the "
        "old-style hooks), or leave the layer out with layers=<predicate>")


def no_scorable_layer(layers: LayerSelector) -> ZiCoUserError:
    return ZiCoUserError(
        "the model has no layer ZiCo can score: no trainable weight of "
        + ("Conv2d/Linear modules" if layers is None else f"the selected layers ({layers!r})")
        + ". Pass layers=(nn.Conv1d, ...) or a predicate(name, module) to choose others."
    )
