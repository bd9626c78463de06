"""Model factories as candidates of the run engine, for users without a SearchSpace: a factory is
sent to the scoring processes by name ('module:qualname'), as pickle sends a function, and each
worker imports it there. So it must be a top-level function or class of an importable module
(or of the main script, which worker processes re-import; Ray actors cannot: they run elsewhere)."""
from __future__ import annotations

import importlib

import torch

from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import SearchSpace

_WHERE = ("define it at the top level of a module (def make(): return MyNet()), since the scoring processes "
          "look it up by 'module:name'")


def _lookup(module_name: str, qualname: str):
    module = importlib.import_module(module_name)
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def factory_name(factory, remote: bool = False) -> str:
    """'module:qualname' of a model factory (a callable, or that name as a string); one clear
    ZiCoUserError when the scoring processes could not find it by that name."""
    module_name = factory.partition(":")[0] if isinstance(factory, str) else getattr(factory, "__module__", None)
    if remote and module_name == "__main__":
        raise ZiCoUserError(f"model factory {factory!r}: Ray actors cannot import a script's __main__; move it "
                            "into a module the cluster can import")
    if isinstance(factory, str):
        module_name, sep, qualname = factory.partition(":")
        if not sep or not module_name or not qualname:
            raise ZiCoUserError(f"model factory {factory!r}: expected a callable or 'module:name'")
        try:
            target = _lookup(module_name, qualname)
        except (ImportError, AttributeError) as error:
            raise ZiCoUserError(f"model factory {factory!r} cannot be found ({type(error).__name__}: {error})") from None
        if not callable(target):
            raise ZiCoUserError(f"model factory {factory!r} is a {type(target).__name__}, not a callable")
        name = factory
    elif callable(factory):
        module_name, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
        if not module_name or not qualname or "<" in qualname:  # <lambda>, <locals>: nothing to import
            raise ZiCoUserError(f"model factory {factory!r} has no importable name (a lambda, a partial or a "
                                f"function defined inside another); {_WHERE}")
        try:
            found = _lookup(module_name, qualname)
        except (ImportError, AttributeError):
            found = None
        if found is not factory:
            raise ZiCoUserError(f"model factory {module_name}:{qualname} is not what that name imports; {_WHERE}")
        name = f"{module_name}:{qualname}"
    else:
        raise ZiCoUserError(f"a model factory is a callable returning an nn.Module, not a {type(factory).__name__}")
    return name


class FactorySpace(SearchSpace):
    """The space whose architectures are model factories' names: build(name) calls the factory.
    It has no analytic cost (cost() is None: params/flops proxies are refused) and nothing to
    mutate; the seed rule's key is 'model:<name>', as `zico-fast score --model <name>` uses."""

    name = "factories"

    def canonical(self, arch: str) -> str:
        return factory_name(arch)

    def key(self, arch: str) -> str:
        return f"model:{arch}"

    def build(self, arch: str) -> torch.nn.Module:
        model = _lookup(*arch.split(":", 1))()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"the factory {arch} returned a {type(model).__name__}, not an nn.Module")
        return model

    def cost(self, arch: str):
        return None

    def _no_search(self, *args, **kwargs):
        raise ZiCoUserError("model factories form no search space: search and mutate in your own loop")

    initial = random = mutate = _no_search
