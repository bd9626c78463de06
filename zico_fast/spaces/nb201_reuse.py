"""One NB201 network per scoring worker, re-assembled and re-initialised in place for each candidate.

A fresh build (fast_build) still creates ~290 module objects and ~300 tensors per candidate, and
the scorer then walks the new tree to plan its hooks: several ms of host time per NB201 candidate,
more than a GPU needs for the candidate's passes. A scoring worker drops each network once it is
scored, so it can keep one instead:
- every op a cell edge can hold is built once per (cell, edge, op), on the device, and kept;
- a candidate puts its ops into the cells' edge lists, redraws exactly the tensors a fresh build
  draws, in the same order and from the same seeded stream, in one native call, and gets the
  scorer's plan joined from per-part plans made once.
BatchNorm's constants (weight 1, bias 0, running statistics 0/1/0) are set once, when a module is
made: scoring never writes them (no optimiser step; running statistics are not tracked while
scoring), and the engine drops the network after any failed candidate. Touching those ~500 tensors
per candidate would cost more than the draws.
The network is bit for bit `space.build(arch, seed=s)`, module names included, and its plan is
what the scorer would build (tests/test_nb201_reuse.py checks both). It is valid until the next
`build`: callers must not keep it, nor change it except as scoring does.
"""
from __future__ import annotations

from itertools import chain

import torch
from torch import nn

from zico_fast._ops import init_weights_
from zico_fast.layers import named_modules_fast
from zico_fast.model_state import ModelPlan, install_plan
from zico_fast.spaces.fast_build import clone, init_entries, materialize
from zico_fast.spaces.nb201 import EDGES, OPS, _parse, _prototypes

_EDGE_NAMES = tuple(str(edge) for edge in range(len(EDGES)))


class _Part:
    """A stretch of the network's module walk: its randomly initialised tensors in draw order with
    their bounds, and its plan, kept as one tuple of lists (`columns`) so a candidate concatenates
    all its parts' in one C-level pass. `used`: how many leading columns hold anything (NB201
    leaves the last four empty everywhere; skipping them cuts swap + join by a fifth: RESULTS.md)."""

    def __init__(self, named: list[tuple[str, nn.Module]], includes_root: bool = False):
        uniform, bounds = [], []
        for _, _, tensor, _, (kind, value) in init_entries(module for _, module in named):
            if kind == "uniform":
                uniform.append(tensor)
                bounds.append(value)
        plan = ModelPlan.of_part(named, None, includes_root)
        # the last two columns: the part's skipped layers (a dict, if any) and custom_train (if True)
        self.columns = (uniform, bounds, *plan.lists(), [plan.skipped] if plan.skipped else [],
                        [True] if plan.custom_train else [])
        self.used = max((i + 1 for i, column in enumerate(self.columns) if column), default=0)


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
        self._used = max(part.used for part in self._skeleton if isinstance(part, _Part))  # grows with _op
        self._edge_lists = {cell: self.net.cells[cell].edges.__dict__ for cell in self._widths}
        # [cell][edge][op] -> (op module, its part), built on first use
        self._table = {cell: [[None] * len(OPS) for _ in EDGES] for cell in self._widths}

    def warm_up(self) -> None:
        """Builds every (cell, edge, op) module now, as a long run ends up having (benchmarks time
        candidates against that, not against the first ones' module building)."""
        for cell, row in self._table.items():
            for edge, modules in enumerate(row):
                for op, entry in enumerate(modules):
                    if entry is None:
                        self._op(cell, edge, op)

    def _op(self, cell: int, edge: int, op: int) -> tuple[nn.Module, _Part]:
        recipes: dict = {}
        module = materialize(clone(self._op_protos[(op, self._widths[cell])], recipes), self.device, recipes, seed=0)
        prefix = f"cells.{cell}.edges.{edge}"
        named = [(prefix + ("." + name if name else ""), m) for name, m in named_modules_fast(module)]
        self._table[cell][edge][op] = entry = (module, _Part(named))
        self._used = max(self._used, entry[1].used)
        return entry

    def build(self, arch: str, seed: int) -> nn.Module:
        ops = tuple(enumerate(_parse(arch)))
        parts: list[_Part] = []
        for piece in self._skeleton:
            if isinstance(piece, _Part):
                parts.append(piece)
                continue
            row = self._table[piece]
            chosen = [row[edge][op] or self._op(piece, edge, op) for edge, op in ops]
            # Behind nn.Module's back (no registration hook, no plan generation): the plan is installed below.
            self._edge_lists[piece]["_modules"] = dict(zip(_EDGE_NAMES, (m for m, _ in chosen)))
            parts += [part for _, part in chosen]
        used = self._used
        columns = [list(chain.from_iterable(c)) for c in zip(*(part.columns[:used] for part in parts))]
        columns += [[] for _ in range(len(parts[0].columns) - used)]
        with torch.no_grad():  # the constants (BatchNorm's 1s and 0s) were set when the modules were made
            init_weights_(columns[0], columns[1], [], [], seed)
        install_plan(self.net, ModelPlan.joined(None, columns[2:-2], columns[-2], bool(columns[-1])))
        return self.net
