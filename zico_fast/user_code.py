"""A user's own code named on the command line ('module:name' or 'path/file.py:name': --model
factories and --space classes): loading it, checking a space, and turning an exception raised in
it into one line that names the user's file and line (their code, not ours, has the bug)."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import random
import sys
import traceback
from pathlib import Path

import torch

from zico_fast.errors import ZiCoUserError
from zico_fast.spaces.base import Cost, SearchSpace

_LOADED: dict[str, str] = {}  # folder of a loaded user module -> "--flag 'spec'" that loaded it


def _import(spec: str, flag: str, target: str):
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise ZiCoUserError(f"{flag} {spec!r}: no file {Path(target)}")
        if sys.modules.get(path.stem) is not None and getattr(sys.modules[path.stem], "__file__", None) == str(path):
            return sys.modules[path.stem]
        # Imported by its stem with its folder on sys.path, so worker processes (which get this
        # process's sys.path) unpickle a space or factory from it by that name.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[path.stem]
            raise
        return module
    if str(Path.cwd()) not in sys.path:  # as `python -m` does, so a module beside the user imports
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(target)


def load_attribute(spec: str, flag: str, what: str):
    """The object `spec` ('module:name' or 'file.py:name') names; `flag` and `what` ('factory',
    'SearchSpace class') word the one-line errors."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ZiCoUserError(f"{flag} {spec!r}: expected 'module:{what}' or 'file.py:{what}'")
    try:
        module = _import(spec, flag, target)
    except ModuleNotFoundError as error:
        raise ZiCoUserError(f"{flag} {spec!r}: cannot import {target!r} ({error})") from None
    except SyntaxError as error:
        raise ZiCoUserError(f"{flag} {spec!r}: {error.filename} line {error.lineno}: {error.msg}") from None
    except ZiCoUserError:
        raise
    except Exception as error:  # the user's module failed while it ran; its own traceback is theirs to see
        rerun = f"python {target}" if target.endswith(".py") else f"python -c 'import {target}'"
        raise ZiCoUserError(f"{flag} {spec!r}: importing {target} raised {type(error).__name__}: {error} "
                            f"({rerun} shows where)") from None
    if getattr(module, "__file__", None):
        _LOADED.setdefault(str(Path(module.__file__).resolve().parent), f"{flag} {spec!r}")
    found = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise ZiCoUserError(f"{flag} {spec!r}: {target} has no attribute {attr!r}")
        found = getattr(found, part)
    return found


def _call(spec: str, label: str, method, *args, **kwargs):
    try:
        return method(*args, **kwargs)
    except Exception as error:
        raise ZiCoUserError(f"--space {spec!r}: {label} raised {type(error).__name__}: {error}") from None


def load_space(spec: str, options: dict) -> SearchSpace:
    """The user's SearchSpace subclass named by `spec`, made with those of `options` (num_classes,
    resolution) its constructor takes, then tried once (initial, random, mutate, canonical, key,
    cost) so a broken method is one line before any work, not a traceback in the middle of a run."""
    cls = load_attribute(spec, "--space", "SearchSpace class")
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        kind = f"class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise ZiCoUserError(f"--space {spec!r} is {kind}, not a subclass of zico_fast.spaces.SearchSpace; see "
                            "'Your own search space' in the README")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ZiCoUserError(f"--space {spec!r}: {cls.__name__} does not define {missing}")
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    space = _call(spec, f"{cls.__name__}()", cls, **{k: v for k, v in options.items()
                                                     if takes_any or k in parameters})
    rng = random.Random(0)
    name = cls.__name__
    arch = _call(spec, f"{name}.canonical", space.canonical, _call(spec, f"{name}.initial", space.initial, rng))
    _call(spec, f"{name}.random", space.random, rng)
    _call(spec, f"{name}.canonical", space.canonical, _call(spec, f"{name}.mutate", space.mutate, arch, rng, 1))
    _call(spec, f"{name}.key", space.key, arch)
    cost = _call(spec, f"{name}.cost", space.cost, arch)
    if not isinstance(cost, Cost):
        raise ZiCoUserError(f"--space {spec!r}: {name}.cost returned a {type(cost).__name__}, not a "
                            "zico_fast.spaces.Cost(params, flops, depth)")
    for attribute in ("num_classes", "resolution"):  # the data are drawn to fit them
        if not isinstance(getattr(space, attribute, None), int):
            raise ZiCoUserError(f"--space {spec!r}: {name} needs an integer attribute {attribute} (the data are "
                                "drawn to fit it)")
    return space


def _user_frame(error: BaseException):
    """The innermost frame of `error`'s traceback in a loaded user module's folder (zico_fast excluded)."""
    ours = str(Path(__file__).resolve().parent)
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = str(Path(frame.filename).resolve())
        if path.startswith(ours):
            continue
        for folder, named in _LOADED.items():
            if path.startswith(folder + "/"):
                return named, frame
    return None


@contextlib.contextmanager
def blame_user_code():
    """An exception raised in the user's loaded code becomes one ZiCoUserError naming their file and
    line (running out of memory is left to the caller, which says so)."""
    try:
        yield
    except (ZiCoUserError, MemoryError):
        raise
    except Exception as error:
        found = _user_frame(error) if _LOADED else None
        if found is None or isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error):
            raise
        named, frame = found
        message = (str(error).strip().splitlines() or [""])[0]
        raise ZiCoUserError(f"{named}: {frame.name} raised {type(error).__name__}: {message} "
                            f"({Path(frame.filename).name} line {frame.lineno})") from None
