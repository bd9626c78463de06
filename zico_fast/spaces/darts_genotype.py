"""DARTS / NAS-Bench-301 cells as data: reading both spellings (never with eval), validation, the
canonical form of a cell pair, and writing it back as a genotype or as NASLib's compact encoding.

A DARTS architecture is a normal and a reduction cell. Each has 2 inputs (node 0: the output of the
cell before the previous one, node 1: of the previous cell) and 4 intermediate nodes 2..5; node n
sums 2 edges, each an op applied to a different earlier node (0..n-1); the cell's output
concatenates nodes 2..5.

Spellings accepted by `parse`:
- the DARTS paper's genotype text, `Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...],
  normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])`: 8 (op, input) pairs per
  cell, node 2's two first, then node 3's, 4's, 5's; the concat may be `range(2, 6)`; the op `none`
  (a zero edge), which some sources write, is accepted; a DARTS `Genotype` namedtuple too;
- NASLib's compact encoding, `(((input, op_index), ...8), ((input, op_index), ...8))` (normal cell,
  then reduction cell; lists or tuples, as text or as Python objects), op_index into `OPS`.
"""
from __future__ import annotations

import ast
import itertools
import numbers
import re
from dataclasses import dataclass

from zico_fast.errors import ZiCoUserError

# NASLib's compact op indices (search_spaces/nasbench301/conversions.py): NAS-Bench-301's 7 ops.
OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")
NONE = "none"  # a zero edge: not in NAS-Bench-301's space, but DARTS's own op list has it
CELLS = ("normal", "reduce")
NODES = 4  # intermediate nodes per cell, numbered 2..5
CONCAT = [2, 3, 4, 5]
FORMAT = ("expected DARTS genotype text \"Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ...8 pairs], "
          "normal_concat=[2, 3, 4, 5], reduce=[...8 pairs], reduce_concat=[2, 3, 4, 5])\" or NASLib's compact "
          "encoding '[[(input, op_index), ...8 pairs], [...8 pairs]]' with op_index into " + str(list(OPS)))
_COMPACT_TEXT = re.compile(r"[\s\d,()\[\]]+")
_MAX_TEXT = 10_000  # a genotype is ~450 characters; refuse walls of text before parsing them

Edge = tuple[str, int]  # (op name, input node)


@dataclass(frozen=True)
class Genotype:
    """A validated cell pair: each cell is 8 (op, input) edges, two per intermediate node in node order."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]

    def cells(self) -> tuple[tuple[Edge, ...], tuple[Edge, ...]]:
        return self.normal, self.reduce

    def to_string(self) -> str:
        """The DARTS paper's spelling (what `repr` of its Genotype namedtuple prints)."""
        def edges(cell):
            return "[" + ", ".join(f"({op!r}, {node})" for op, node in cell) + "]"
        return (f"Genotype(normal={edges(self.normal)}, normal_concat={CONCAT}, "
                f"reduce={edges(self.reduce)}, reduce_concat={CONCAT})")

    def to_compact(self) -> tuple:
        """NASLib's compact encoding; ZiCoUserError if an edge is `none`, which it cannot spell."""
        if any(op == NONE for cell in self.cells() for op, _ in cell):
            raise ZiCoUserError("NASLib's compact encoding has no 'none' op; this genotype uses one")
        return tuple(tuple((node, OPS.index(op)) for op, node in cell) for cell in self.cells())


def parse(arch) -> Genotype:
    """Any accepted spelling -> the validated Genotype, edges as given; ZiCoUserError naming the cell,
    node and op that are wrong."""
    if isinstance(arch, str):
        text = arch.strip()
        if len(text) > _MAX_TEXT:
            raise ZiCoUserError(f"a DARTS architecture of {len(text)} characters is too long; {FORMAT}")
        if text.startswith("Genotype"):
            return _from_genotype_text(text)
        if text[:1] in "([":
            if not _COMPACT_TEXT.fullmatch(text):
                raise ZiCoUserError(f"{_short(text)} is not NASLib's compact encoding: it may hold only numbers, "
                                    f"commas and brackets; {FORMAT}")
            try:
                compact = ast.literal_eval(text)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                raise ZiCoUserError(f"{_short(text)} is not well-formed compact encoding; {FORMAT}") from None
            return _from_compact(compact)
        raise ZiCoUserError(f"cannot read a DARTS architecture from {_short(text)}; {FORMAT}")
    if hasattr(arch, "normal") and hasattr(arch, "reduce"):  # a DARTS Genotype namedtuple
        for name in CELLS:
            _check_concat(getattr(arch, f"{name}_concat", CONCAT), name)
        return _validated({name: getattr(arch, name) for name in CELLS})
    if isinstance(arch, (tuple, list)):
        return _from_compact(arch)
    raise ZiCoUserError(f"cannot read a DARTS architecture from a {type(arch).__name__}; {FORMAT}")


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _from_genotype_text(text: str) -> Genotype:
    """Genotype(...) read as syntax: only list/tuple/str/int literals (and range(a, b) for a concat)
    are taken as values; nothing is called or looked up."""
    try:
        call = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ZiCoUserError(f"{_short(text)} is not well-formed Genotype(...) text; {FORMAT}") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise ZiCoUserError(f"{_short(text)} is not one Genotype(...) expression; {FORMAT}")
    fields = ("normal", "normal_concat", "reduce", "reduce_concat")
    if len(call.args) > len(fields):
        raise ZiCoUserError(f"Genotype takes 4 fields ({', '.join(fields)}), got {len(call.args)} positional")
    values = dict(zip(fields, call.args))
    for keyword in call.keywords:
        if keyword.arg not in fields or keyword.arg in values:
            raise ZiCoUserError(f"Genotype field {keyword.arg!r} is unknown or given twice; "
                                f"its fields are {', '.join(fields)}")
        values[keyword.arg] = keyword.value
    missing = [f for f in fields if f not in values]
    if missing:
        raise ZiCoUserError(f"Genotype lacks {', '.join(missing)}; {FORMAT}")
    for name in CELLS:
        _check_concat(_concat_value(values[f"{name}_concat"], name), name)
    return _validated({name: _literal(values[name], f"the {name} cell must be a literal list of (op, input) pairs; "
                                                    f"{FORMAT}") for name in CELLS})


def _literal(node: ast.expr, wrong: str):
    """The value of a literal expression; ZiCoUserError(`wrong`) for anything else (a name, a call)."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ZiCoUserError(wrong) from None


def _concat_value(node: ast.expr, name: str):
    """A concat list, or range(a, b) with literal bounds (as DARTS's own genotypes write it)."""
    wrong = f"{name}_concat must be the literal list {CONCAT} or range(2, 6)"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
            and not node.keywords and 1 <= len(node.args) <= 2:
        bounds = [_literal(a, wrong) for a in node.args]
        if all(type(b) is int for b in bounds):
            return list(range(*bounds))
    return _literal(node, wrong)


def _check_concat(concat, name: str) -> None:
    if not isinstance(concat, (list, tuple, range)) or list(concat) != CONCAT:
        raise ZiCoUserError(f"{name}_concat is {concat!r}; DARTS / NAS-Bench-301 cells concatenate every "
                            f"intermediate node, {CONCAT}")


def _from_compact(compact) -> Genotype:
    if not isinstance(compact, (tuple, list)) or len(compact) != 2:
        raise ZiCoUserError(f"compact encoding must hold 2 cells (normal, reduction); {FORMAT}")
    cells = {}
    for name, cell in zip(CELLS, compact):
        _check_count(cell, name)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in cell):
            raise ZiCoUserError(f"the {name} cell of the compact encoding must be (input, op_index) pairs; {FORMAT}")
        edges = []
        for position, (node, index) in enumerate(cell):
            if not _is_int(index) or not 0 <= index < len(OPS):
                raise ZiCoUserError(f"{_where(name, position)}: op index {index!r} is not one of 0..{len(OPS) - 1} "
                                    f"{list(OPS)}")
            edges.append((OPS[int(index)], node))
        cells[name] = edges
    return _validated(cells)


def _check_count(cell, name: str) -> None:
    if not isinstance(cell, (tuple, list)) or len(cell) != 2 * NODES:
        count = len(cell) if isinstance(cell, (tuple, list)) else f"no list of {type(cell).__name__}"
        raise ZiCoUserError(f"the {name} cell has {count} edges; it needs 8, two for each of nodes 2..5")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _where(name: str, position: int) -> str:
    return f"{name} cell, node {2 + position // 2} (edge {position + 1} of 8)"


def _validated(cells: dict) -> Genotype:
    checked = []
    for name in CELLS:
        cell = cells[name]
        _check_count(cell, name)
        edges = []
        for position, edge in enumerate(cell):
            where, node = _where(name, position), 2 + position // 2
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise ZiCoUserError(f"{where}: {edge!r} is not an (op, input) pair")
            op, source = edge
            if not isinstance(op, str) or (op not in OPS and op != NONE):
                raise ZiCoUserError(f"{where}: unknown op {op!r}; choose from {', '.join(OPS)} (or none)")
            if not _is_int(source) or not 0 <= source < node:
                raise ZiCoUserError(f"{where}: input {source!r} is not an earlier node (0..{node - 1})")
            edges.append((op, int(source)))
        for n in range(NODES):
            if edges[2 * n][1] == edges[2 * n + 1][1]:
                raise ZiCoUserError(f"{name} cell, node {2 + n}: both edges read node {edges[2 * n][1]}; a DARTS "
                                    "node takes two different inputs")
        checked.append(tuple(edges))
    return Genotype(*checked)


def canonical(genotype: Genotype) -> Genotype:
    """The one spelling of every equal cell pair: within a node the two edges are an unordered pair
    (sorted by input, then op), and the intermediate nodes take the numbering, among those that keep
    every edge reading an earlier node, with the smallest spelling. Renumbering only
    permutes the channels of the cell's concatenated output, so the networks are the same function
    family (the next 1x1 convs and the classifier see the same channels in another order)."""
    return Genotype(*(_canonical_cell(cell) for cell in genotype.cells()))


def _canonical_cell(cell: tuple[Edge, ...]) -> tuple[Edge, ...]:
    best = None
    for order in itertools.permutations(range(NODES)):  # order[new position] = old node index
        new_of = {2 + old: 2 + new for new, old in enumerate(order)}
        new_of.update({0: 0, 1: 1})
        nodes = []
        for new, old in enumerate(order):
            pair = sorted(((new_of[src], op) for op, src in cell[2 * old:2 * old + 2]))
            if pair[-1][0] >= 2 + new:  # reads a node that now comes later: not a valid numbering
                break
            nodes.append(tuple(pair))
        else:
            spelling = tuple(nodes)
            if best is None or spelling < best:
                best = spelling
    return tuple((op, src) for node in best for src, op in node)
