"""Fast network building for search loops: clone module skeletons, then fill every tensor in one pass.

Building an NB201 network with nn.Module constructors costs tens of milliseconds of Python (each
Conv2d/BatchNorm2d constructor allocates, then runs its own reset_parameters). A search builds one
network per candidate, so that cost lands on every candidate. Here:

- `clone` copies a prototype module tree (built once, on the 'meta' device) object by object: same
  classes, same attributes, fresh containers (hooks, parameter and module dicts), so the clone is an
  ordinary nn.Module that shares nothing mutable with the prototype or with any other clone;
- `materialize` gives every parameter and buffer of a model its own new tensor on the target device
  and initialises it exactly as PyTorch's constructors do (Conv2d/Linear: kaiming_uniform(a=sqrt(5))
  weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias; BatchNorm: weight 1, bias 0, running stats
  0/1/0), drawing the same numbers from the same generator in the same order (modules() order, which
  is construction order for the spaces here). So, under `torch.manual_seed(s)`, the weights are bit
  for bit those of the constructor-built network, whatever the target device: the numbers come from
  the CPU generator and go to the device in one copy. With `seed=s` they are drawn natively
  (csrc/init_weights.cpp: the same stream, ~7x faster, the global generator untouched), which is
  how the seed rule builds (engine/seeding.py).
"""
from __future__ import annotations

import functools
import math
import weakref

import torch
from torch import nn

from zico_fast._ops import init_weights_

_WEIGHT_GAIN = nn.init.calculate_gain("leaky_relu", math.sqrt(5))  # what Conv/Linear reset_parameters use
# Per prototype module: the attribute names holding mutable containers, and its tensors' init recipe.
_RECIPES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def clone(proto: nn.Module, recipes: dict | None = None) -> nn.Module:
    """A structural copy of `proto`: new module objects and containers, the same (placeholder) tensors.

    Call `materialize` on the result before use; until then its tensors are the prototype's.
    `recipes`, when given, receives {id(new module): its init recipe} for `materialize`.
    """
    containers, recipe = _recipe(proto)
    module = object.__new__(type(proto))
    state = proto.__dict__.copy()
    for k in containers:
        state[k] = state[k].copy()
    state["_modules"] = {name: None if child is None else clone(child, recipes)
                         for name, child in proto._modules.items()}
    object.__setattr__(module, "__dict__", state)
    if recipes is not None:
        recipes[id(module)] = recipe
    return module


def _recipe(module: nn.Module) -> tuple:
    try:
        return _RECIPES[module]
    except KeyError:
        pass
    containers = tuple(k for k, v in module.__dict__.items() if isinstance(v, (dict, set, list)))
    entry = _RECIPES[module] = (containers, tuple(_fills(module)))
    return entry


@functools.lru_cache(maxsize=None)
def _bounds(fan_in: int) -> tuple[float, float]:
    """(weight bound, bias bound), computed exactly as torch.nn.init does for Conv/Linear defaults."""
    std = _WEIGHT_GAIN / math.sqrt(fan_in)
    return math.sqrt(3.0) * std, (1 / math.sqrt(fan_in) if fan_in > 0 else 0)


def _fills(module: nn.Module):
    """(name, is_parameter, fill) of each tensor of `module` in draw order; fill: ('uniform', bound)
    or ('const', value), the values PyTorch's constructor gives it."""
    params, buffers = module._parameters, module._buffers
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        shape = params["weight"].shape
        wb, bb = _bounds(shape[1] * math.prod(shape[2:]))
        yield "weight", True, ("uniform", wb)
        if params.get("bias") is not None:
            yield "bias", True, ("uniform", bb)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        for name, value in (("weight", 1.0), ("bias", 0.0)):
            if params.get(name) is not None:
                yield name, True, ("const", value)
        for name, value in (("running_mean", 0.0), ("running_var", 1.0), ("num_batches_tracked", 0)):
            if buffers.get(name) is not None:
                yield name, False, ("const", value)
    elif any(t is not None for t in params.values()) or any(t is not None for t in buffers.values()):
        raise TypeError(f"materialize does not know how PyTorch initialises {type(module).__name__}; "
                        "build such modules with their constructor instead")


def init_entries(modules, recipes: dict | None = None):
    """(module, name, tensor, is_parameter, fill) of each tensor of `modules`, in draw order when the
    modules come in modules() order; `recipes`: what `clone` gave for them (looked up when None)."""
    for module in modules:
        recipe = recipes[id(module)] if recipes is not None else _recipe(module)[1]
        for name, is_param, fill in recipe:
            yield module, name, (module._parameters if is_param else module._buffers)[name], is_param, fill


def materialize(model: nn.Module, device=None, recipes: dict | None = None, seed: int | None = None) -> nn.Module:
    """Give every parameter/buffer of `model` a new tensor on `device` (default: torch's default
    device, so `with torch.device("cuda"):` builds there too), initialised as PyTorch's constructors
    would after `torch.manual_seed(seed)`. With `seed=None` the numbers come from torch's default CPU
    generator, as the constructors would take them; with a seed, from a private stream that
    torch.manual_seed(seed) would start (the same bits, several times faster, nothing global touched).
    Returns `model`, changed in place. `recipes`: what `clone` gave for this model's modules."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    device = torch.get_default_device() if device is None else torch.device(device)
    plan = list(init_entries(model.modules(), recipes))
    floats = [p for p in plan if p[2].dtype == torch.float32]
    others = [p for p in plan if p[2].dtype != torch.float32]
    if any(p[2].dtype != torch.long or p[4][1] != 0 for p in others):
        raise TypeError("materialize fills float32 tensors and int64 zeros only")
    with torch.no_grad():
        if seed is not None:
            targets = [torch.empty(p[2].shape, dtype=p[2].dtype, device=device) for p in floats + others]
            _init_tensors(list(zip(floats + others, targets)), seed)
        elif device.type == "cpu":  # each tensor is filled where it lives
            cpu = torch.device("cpu")  # explicit: a torch.device(...) context must not move the draws
            targets = [torch.empty(p[2].shape, device=cpu).uniform_(-p[4][1], p[4][1]) if p[4][0] == "uniform"
                       else torch.full(p[2].shape, p[4][1], dtype=torch.float32, device=cpu) for p in floats]
            targets += [torch.zeros((), dtype=torch.long, device=cpu) for _ in others]
        else:  # the same draws into one CPU staging buffer, a single copy, then on-device splits
            targets = _staged(floats, others, device)
    for (module, name, old, is_param, _), t in zip(floats + others, targets):
        if is_param:
            module._parameters[name] = nn.Parameter(t, requires_grad=old.requires_grad)
        else:
            module._buffers[name] = t
    return model


def _init_tensors(entries, seed: int) -> None:
    """[(plan entry, tensor)] -> each tensor set to its entry's fill, uniform draws in list order
    from the stream torch.manual_seed(seed) starts, in one native call."""
    uniform = [(t, p[4][1]) for p, t in entries if p[4][0] == "uniform"]
    constant = [(t, p[4][1]) for p, t in entries if p[4][0] == "const"]
    init_weights_([t for t, _ in uniform], [b for _, b in uniform], [t for t, _ in constant],
                  [float(v) for _, v in constant], seed)


def _staged(floats: list, others: list, device: torch.device) -> list[torch.Tensor]:
    """The tensors of `materialize` on a non-CPU device: floats drawn on the CPU exactly as there,
    sent in one copy, then copied into their own device tensors with two fused foreach copies."""
    sizes = [p[2].numel() for p in floats]
    flat = torch.empty(sum(sizes), device="cpu")
    for (_, _, old, _, (kind, value)), t in zip(floats, flat.split(sizes)):
        if kind == "uniform":
            t.uniform_(-value, value)
        else:
            t.fill_(value)
    sources = [s.view(p[2].shape) for s, p in zip(flat.to(device).split(sizes), floats)]
    targets = [torch.empty(p[2].shape, device=device) for p in floats]
    torch._foreach_copy_(targets, sources)
    if others:
        counters = [torch.empty((), dtype=torch.long, device=device) for _ in others]
        torch._foreach_copy_(counters, list(torch.zeros(len(others), dtype=torch.long, device=device).unbind()))
        targets += counters
    return targets
