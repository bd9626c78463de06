"""One NB201 network per scoring worker, re-assembled and re-initialised in place for each candidate.

A fresh build (fast_build) still creates ~290 module objects and ~300 tensors per candidate, and
the scorer then walks the new tree to plan its hooks: several ms of host time per NB201 candidate,
more than a GPU needs for the candidate's passes. A scoring worker drops each network once it is
scored, so it can keep one instead:
- every op a cell edge can hold is built once per (cell, edge, op), on the device, and kept;
- a candidate puts its ops into the cells' edge lists, redraws exactly the tensors a fresh build
  draws, in the same order and from the same seeded stream, in one native call, and gets the
  scorer's plan joined from per-part plans made once. Picking the ops and joining the plans is one
  native call too (csrc/plan_join.cpp: after the passes its ~1,000 objects come from memory, and
  it overlaps their cache misses where Python waits for each; NOTE: [Why the join is native]).
BatchNorm's constants (weight 1, bias 0, running statistics 0/1/0) are set once, when a module is
made: scoring never writes them (no optimiser step; running statistics are not tracked while
scoring), and the engine drops the network after any failed candidate. Touching those ~500 tensors
per candidate would cost more than the draws.
The network is bit for bit `space.build(arch, seed=s)`, module names included, and its plan is
what the scorer would build (tests/test_nb201_reuse.py checks both). It is valid until the next
`build`: callers must not keep it, nor change it except as scoring does.
"""
from __future__ import annotations

import torch
from torch import nn

from zico_fast._C import join_plan
from zico_fast._ops import init_weights_
from zico_fast.layers import named_modules_fast
from zico_fast.model_state import ModelPlan, install_plan
from zico_fast.spaces.fast_build import clone, init_entries, materialize
from zico_fast.spaces.nb201_arch import EDGES, OPS, _parse
from zico_fast.spaces.nb201_net import _prototypes

_EDGE_NAMES = tuple(str(edge) for edge in range(len(EDGES)))


class _Part:
    """A stretch of the network's module walk: its randomly initialised tensors in draw order with
    their bounds, and its plan, kept as one tuple of column tuples (`columns`), the form join_plan
    concatenates. `used`: how many leading columns hold anything (NB201 leaves the last four empty
    everywhere, so the join skips them)."""

    def __init__(self, named: list[tuple[str, nn.Module]], includes_root: bool = False):
        uniform, bounds = [], []
        for _, _, tensor, _, (kind, value) in init_entries(module for _, module in named):
            if kind == "uniform":
                uniform.append(tensor)
                bounds.append(value)
        plan = ModelPlan.of_part(named, None, includes_root)
        # the last two columns: the part's skipped layers (a dict, if any) and custom_train (if True)
        columns = (uniform, bounds, *plan.lists(), [plan.skipped] if plan.skipped else [],
                   [True] if plan.custom_train else [])
        # Tuples, the empty ones all the one () singleton: the join reads every column of ~100 parts
        # per candidate, mostly from memory after the passes, and a tuple holds its items inline
        # (one object to fetch, not a list and its array).
        self.columns = tuple(tuple(column) for column in columns)
        self.used = max((i + 1 for i, column in enumerate(self.columns) if column), default=0)


class ReusedNB201:
    """`build(arch, seed)`: the NB201 network of `space` for `arch`, initialised as
    `space.build(arch, device=device, seed=seed)` would, reusing this object's modules."""

    def __init__(self, space, device):
        self.space, self.device = space, torch.device(device)
        proto, self._widths, self._op_protos = _prototypes(space.C, space.N, space.num_classes)
        recipes: dict = {}
        self.net = materialize(clone(proto, recipes), self.device, recipes, seed=0)
        # The network's walk for join_plan: the skeleton's parts (columns tuples), cut where each
        # cell's (still empty) edge list sits, with that cell's op table (a list) in between: a
        # cell's ops come right after its edge list in the full walk (depth first).
        # [cell][edge * len(OPS) + op] -> (op module, its part's columns), built on first use.
        self._table = {cell: [None] * (len(EDGES) * len(OPS)) for cell in self._widths}
        edge_lists = {id(self.net.cells[i].edges): i for i in self._widths}
        self._walk: list[tuple | list] = []
        self._cell_edges = []  # each cell's edge list's __dict__, in walk order
        stretch, first, parts = [], True, []
        for name, module in named_modules_fast(self.net):
            stretch.append((name, module))
            if id(module) in edge_lists:
                parts.append(_Part(stretch, includes_root=first))
                self._walk += [parts[-1].columns, self._table[edge_lists[id(module)]]]
                self._cell_edges.append(module.__dict__)
                stretch, first = [], False
        parts.append(_Part(stretch))
        self._walk.append(parts[-1].columns)
        self._columns = len(parts[0].columns)
        self._used = max(part.used for part in parts)  # grows with _op

    def warm_up(self) -> None:
        """Builds every (cell, edge, op) module now, as a long run ends up having (benchmarks time
        candidates against that, not against the first ones' module building)."""
        self._build_ops(range(len(EDGES) * len(OPS)))

    def _build_ops(self, slots) -> None:
        """Builds every cell's ops at `slots` that are not built yet."""
        for cell, row in self._table.items():
            for slot in slots:
                if row[slot] is None:
                    self._op(cell, slot)

    def _op(self, cell: int, slot: int) -> None:
        edge, op = divmod(slot, len(OPS))
        recipes: dict = {}
        module = materialize(clone(self._op_protos[(op, self._widths[cell])], recipes), self.device, recipes, seed=0)
        prefix = f"cells.{cell}.edges.{edge}"
        named = [(prefix + ("." + name if name else ""), m) for name, m in named_modules_fast(module)]
        part = _Part(named)
        self._table[cell][slot] = (module, part.columns)
        self._used = max(self._used, part.used)

    def build(self, arch: str, seed: int) -> nn.Module:
        slots = tuple(edge * len(OPS) + op for edge, op in enumerate(_parse(arch)))
        joined = join_plan(self._walk, slots, self._used)
        if joined is None:  # some chosen op is not built yet
            self._build_ops(slots)
            joined = join_plan(self._walk, slots, self._used)
        columns, cell_ops = joined
        for edges, ops in zip(self._cell_edges, cell_ops):
            # Behind nn.Module's back (no registration hook, no plan generation): the plan is installed below.
            edges["_modules"] = dict(zip(_EDGE_NAMES, ops))
        columns += [[] for _ in range(self._columns - len(columns))]
        with torch.no_grad():  # the constants (BatchNorm's 1s and 0s) were set when the modules were made
            init_weights_(columns[0], columns[1], [], [], seed)
        install_plan(self.net, ModelPlan.joined(None, columns[2:-2], columns[-2], bool(columns[-1])))
        return self.net
