"""One NB201 network per scoring worker, re-assembled and re-initialised in place for each candidate.

A fresh build (fast_build) still creates ~290 module objects and ~300 tensors per candidate, and
the scorer then walks the new tree to plan its hooks: several ms of host time per NB201 candidate,
more than a GPU needs for the candidate's passes. A scoring worker drops each network once it is
scored, so it can keep one instead:
- every op a cell edge can hold is built once per (cell, edge, op), on the device, and kept;
- a candidate puts its ops into the cells' edge lists, redraws exactly the tensors a fresh build
  draws, in the same order and from the same seeded stream, in one native call (BatchNorm state
  reset with it), and gets the scorer's plan joined from per-part plans made once.
The network is bit for bit `space.build(arch, seed=s)`, module names included, and its plan is
what the scorer would build (tests/test_nb201_reuse.py checks both). It is valid until the next
`build`: callers must not keep it, nor change it except as scoring does.
"""
from __future__ import annotations

from itertools import chain
from operator import attrgetter

import torch
from torch import nn

from zico_fast._ops import init_weights_
from zico_fast.layers import named_modules_fast
from zico_fast.model_state import ModelPlan, install_plan
from zico_fast.spaces.fast_build import _recipe, clone, materialize
from zico_fast.spaces.nb201 import Cell, _parse, _prototypes


class _Part:
    """A stretch of the network's module walk: its tensors' fills in draw order, and its plan."""

    def __init__(self, named: list[tuple[str, nn.Module]], includes_root: bool = False):
        self.uniform, self.bounds, self.constant, self.values = [], [], [], []
        for _, module in named:
            for name, is_param, (kind, value) in _recipe(module)[1]:
                tensor = (module._parameters if is_param else module._buffers)[name]
                if kind == "uniform":
                    self.uniform.append(tensor)
                    self.bounds.append(value)
                else:
                    self.constant.append(tensor)
                    self.values.append(float(value))
        self.plan = ModelPlan.of_part(named, None, includes_root)


class ReusedNB201:
    """`build(arch, seed)`: the NB201 network of `space` for `arch`, initialised as
    `space.build(arch, device=device, seed=seed)` would, reusing this object's modules."""

    def __init__(self, space, device):
        self.space, self.device = space, torch.device(device)
        proto, self._widths, self._op_protos = _prototypes(space.C, space.N, space.num_classes)
        recipes: dict = {}
        self.net = materialize(clone(proto, recipes), self.device, recipes, seed=0)
        # The skeleton's walk, cut where each cell's (still empty) edge list sits: a cell's ops come
        # right after its edge list in the full walk (depth first).
        edge_lists = {id(self.net.cells[i].edges): i for i in self._widths}
        self._skeleton: list[_Part | int] = []  # parts, and cell positions where the edge ops go
        stretch, first = [], True
        for name, module in named_modules_fast(self.net):
            stretch.append((name, module))
            if id(module) in edge_lists:
                self._skeleton += [_Part(stretch, includes_root=first), edge_lists[id(module)]]
                stretch, first = [], False
        self._skeleton.append(_Part(stretch))
        self._ops: dict[tuple[int, int, int], tuple[nn.Module, _Part]] = {}

    def _op(self, cell: int, edge: int, op: int) -> tuple[nn.Module, _Part]:
        key = (cell, edge, op)
        if key not in self._ops:
            recipes: dict = {}
            module = materialize(clone(self._op_protos[(op, self._widths[cell])], recipes), self.device,
                                 recipes, seed=0)
            prefix = f"cells.{cell}.edges.{edge}"
            named = [(prefix + ("." + name if name else ""), m) for name, m in named_modules_fast(module)]
            self._ops[key] = (module, _Part(named))
        return self._ops[key]

    def build(self, arch: str, seed: int) -> nn.Module:
        ops = _parse(arch)
        parts: list[_Part] = []
        for piece in self._skeleton:
            if isinstance(piece, _Part):
                parts.append(piece)
                continue
            chosen = [self._op(piece, edge, op) for edge, op in enumerate(ops)]
            cell: Cell = self.net.cells[piece]
            # Behind nn.Module's back (no registration hook, no plan generation): the plan is installed below.
            cell.edges.__dict__["_modules"] = {str(edge): module for edge, (module, _) in enumerate(chosen)}
            parts += [part for _, part in chosen]
        with torch.no_grad():
            init_weights_(*(list(chain.from_iterable(map(attrgetter(field), parts)))
                            for field in ("uniform", "bounds", "constant", "values")), seed)
        install_plan(self.net, ModelPlan.join([p.plan for p in parts]))
        return self.net
