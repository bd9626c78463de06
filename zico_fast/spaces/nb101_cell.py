"""NAS-Bench-101 cells: parsing every spelling, validation, pruning, the canonical string, hashing.

A cell is a DAG of up to 7 vertices given by an upper-triangular adjacency matrix (row = source,
column = destination) and one op per vertex; vertex 0 is `input`, the last is `output`.

Spellings accepted by `parse`:
- the canonical string, one '|'-separated entry per vertex, each interior/output vertex naming its
  op and its sources: 'input|conv3x3-bn-relu<0|maxpool3x3<0,1|output<1,2'
  (vertex 1 is a 3x3 conv of the input, vertex 2 a max-pool of the sum of vertices 0 and 1, the
  output concatenates vertices 1 and 2);
- NASLib's tuple: the n x n matrix flattened row by row, then the n ops as indices into
  NASLIB_OPS (n = 7 gives NASLib's 56 numbers), as a tuple, list, 1-D array or text '(0, 1, ...)';
- the (matrix, ops) pair of NAS-Bench-101's ModelSpec, as a Python pair or as JSON text
  '{"matrix": [[...]], "ops": [...]}'.
"""
from __future__ import annotations

import hashlib
import numbers
import json
import re
from dataclasses import dataclass

from zico_fast.errors import ZiCoUserError

INPUT, OUTPUT = "input", "output"
OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # interior ops, NAS-Bench-101's order
NASLIB_OPS = (INPUT, OUTPUT, "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")  # NASLib's op indices
MAX_VERTICES, MAX_EDGES = 7, 9
EXAMPLE = "'input|conv3x3-bn-relu<0|maxpool3x3<0,1|output<1,2'"
FORMAT = (f"expected a canonical string like {EXAMPLE} (ops: {', '.join(OPS)}), NASLib's tuple "
          f"(7x7 adjacency flattened, then 7 op indices into {list(NASLIB_OPS)}), or a (matrix, ops) pair")
_ENTRY = re.compile(r"([a-z0-9\-]+)<(\d+(?:,\d+)*)")


@dataclass(frozen=True)
class Cell:
    """A valid, pruned cell: `edges[j]` are the sources of vertex j (sorted), `ops[j]` its op name."""

    ops: tuple[str, ...]
    edges: tuple[tuple[int, ...], ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    def matrix(self) -> list[list[int]]:
        n = self.num_vertices
        return [[int(i in self.edges[j]) for j in range(n)] for i in range(n)]

    def to_string(self) -> str:
        entries = [INPUT] + [f"{op}<{','.join(map(str, src))}" for op, src in zip(self.ops[1:], self.edges[1:])]
        return "|".join(entries)

    def to_naslib_tuple(self) -> tuple[int, ...]:
        """NASLib's encoding of this (pruned) cell: n*n + n numbers (56 when n = 7)."""
        flat = [v for row in self.matrix() for v in row]
        return tuple(flat + [NASLIB_OPS.index(op) for op in self.ops])

    def vertex_channels(self, cin: int, cout: int) -> list[int]:
        """NAS-Bench-101's channel split: the output channels are divided among the vertices that
        feed the output (the first `cout % k` of them get one extra), and every other interior vertex
        takes the largest width among the interior vertices it feeds, so sums only ever truncate."""
        n = self.num_vertices
        channels = [cin] + [0] * (n - 2) + [cout]
        if n == 2:
            return channels
        to_output = [v for v in self.edges[-1] if v != 0]
        width, extra = divmod(cout, len(to_output))
        for rank, v in enumerate(to_output):
            channels[v] = width + (rank < extra)
        for v in range(n - 3, 0, -1):
            if v not in to_output:
                channels[v] = max(channels[d] for d in range(v + 1, n - 1) if v in self.edges[d])
        return channels


def parse(arch) -> Cell:
    """Any accepted spelling -> the validated, pruned Cell; ZiCoUserError (a ValueError) saying what is wrong."""
    matrix, ops = _matrix_and_ops(arch)
    return _validated(matrix, ops, arch)


def _matrix_and_ops(arch) -> tuple[list[list[int]], list[str]]:
    if isinstance(arch, str):
        text = arch.strip()
        if text.startswith("{"):
            return _from_json(text)
        if text[:1] in "([" or text[:1].isdigit():
            fields = [f.strip() for f in text.strip("()[] ").split(",")]
            if not all(f.isdigit() for f in fields):
                raise ZiCoUserError(f"NASLib tuple {arch!r} must hold only 0/1 entries and op indices; {FORMAT}")
            return _from_tuple([int(f) for f in fields])
        return _from_string(text)
    if isinstance(arch, (tuple, list)) and len(arch) == 2 and isinstance(arch[1], (tuple, list)) \
            and all(isinstance(o, str) for o in arch[1]):
        return _rows(arch[0]), list(arch[1])
    if getattr(arch, "ndim", None) == 1:
        arch = arch.tolist()  # a numpy / torch vector of NASLib's numbers
    if isinstance(arch, (tuple, list)) and all(isinstance(v, numbers.Integral) for v in arch):
        return _from_tuple([int(v) for v in arch])
    raise ZiCoUserError(f"cannot read a NAS-Bench-101 cell from a {type(arch).__name__}; {FORMAT}")


def _rows(matrix) -> list[list[int]]:
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in rows):
        raise ZiCoUserError(f"adjacency matrix must be a list of rows, got {matrix!r}")
    try:
        return [[int(v) for v in r] for r in rows]
    except (TypeError, ValueError):
        raise ZiCoUserError(f"adjacency matrix entries must be 0 or 1, got {matrix!r}") from None


def _from_json(text: str) -> tuple[list[list[int]], list[str]]:
    try:
        spec = json.loads(text)
        return _rows(spec["matrix"]), list(spec["ops"])
    except (ValueError, KeyError, TypeError) as error:
        raise ZiCoUserError(f"{text!r} is not JSON with 'matrix' and 'ops' ({error}); {FORMAT}") from None


def _from_tuple(values: list[int]) -> tuple[list[list[int]], list[str]]:
    sizes = {n * n + n: n for n in range(2, MAX_VERTICES + 1)}
    if len(values) not in sizes:
        raise ZiCoUserError(f"NASLib tuple has {len(values)} numbers; a cell of n vertices needs n*n + n "
                         f"(56 for 7 vertices); {FORMAT}")
    n = sizes[len(values)]
    bad = [v for v in values[n * n:] if not 0 <= v < len(NASLIB_OPS)]
    if bad:
        raise ZiCoUserError(f"NASLib op index {bad[0]} is not one of 0..{len(NASLIB_OPS) - 1} {list(NASLIB_OPS)}")
    return [values[i * n:(i + 1) * n] for i in range(n)], [NASLIB_OPS[v] for v in values[n * n:]]


def _from_string(text: str) -> tuple[list[list[int]], list[str]]:
    entries = text.split("|")
    if entries[0] != INPUT:
        raise ZiCoUserError(f"{text!r} must start with 'input|'; {FORMAT}")
    n = len(entries)
    matrix, ops = [[0] * n for _ in range(n)], [INPUT]
    for j, entry in enumerate(entries[1:], start=1):
        m = _ENTRY.fullmatch(entry)
        if m is None:
            raise ZiCoUserError(f"entry {entry!r} (vertex {j}) of {text!r} is not 'op<source,source,...'; "
                                f"{FORMAT}")
        ops.append(m.group(1))
        for src in map(int, m.group(2).split(",")):
            if src >= j:
                raise ZiCoUserError(f"vertex {j} of {text!r} takes input from vertex {src}; a vertex may only "
                                 f"read earlier vertices; {FORMAT}")
            matrix[src][j] = 1
    return matrix, ops


def _validated(matrix: list[list[int]], ops: list[str], arch) -> Cell:
    n = len(matrix)
    if not 2 <= n <= MAX_VERTICES or any(len(row) != n for row in matrix):
        raise ZiCoUserError(f"adjacency matrix of {arch!r} must be square with 2..{MAX_VERTICES} vertices, "
                         f"got {n} rows of lengths {sorted({len(r) for r in matrix})}")
    if any(v not in (0, 1) for row in matrix for v in row):
        raise ZiCoUserError(f"adjacency matrix of {arch!r} must hold only 0 and 1")
    if any(matrix[i][j] for i in range(n) for j in range(i + 1)):
        raise ZiCoUserError(f"adjacency matrix of {arch!r} is not strictly upper triangular: every edge must "
                         f"go from a vertex to a later one (the cell must be a DAG in vertex order)")
    if len(ops) != n:
        raise ZiCoUserError(f"{arch!r} has {len(ops)} ops for {n} vertices; give one op per vertex")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise ZiCoUserError(f"{arch!r}: the first op must be 'input' and the last 'output', "
                            f"got {ops[0]!r}, {ops[-1]!r}")
    bad = [op for op in ops[1:-1] if op not in OPS]
    if bad:
        raise ZiCoUserError(f"{arch!r}: unknown interior op {bad[0]!r}; choose from {', '.join(OPS)}")
    keep = _prune(matrix)
    if keep is None:
        raise ZiCoUserError(f"{arch!r} is disconnected: no path leads from the input to the output")
    edges = tuple(tuple(keep.index(i) for i in keep if matrix[i][j]) for j in keep)
    num_edges = sum(len(src) for src in edges)
    if num_edges > MAX_EDGES:
        raise ZiCoUserError(f"{arch!r} has {num_edges} edges after pruning; NAS-Bench-101 allows at most "
                            f"{MAX_EDGES}")
    return Cell(tuple(ops[i] for i in keep), edges)


def _prune(matrix: list[list[int]]) -> list[int] | None:
    """Vertices on some input -> output path (NAS-Bench-101's ModelSpec drops all others: they
    cannot affect the output); None when the output is unreachable from the input."""
    n = len(matrix)
    from_input, to_output = {0}, {n - 1}
    for j in range(1, n):
        if any(matrix[i][j] for i in from_input):
            from_input.add(j)
    for i in range(n - 2, -1, -1):
        if any(matrix[i][j] for j in to_output):
            to_output.add(i)
    if n - 1 not in from_input:
        return None
    return sorted(from_input & to_output)


def module_hash(cell: Cell) -> str:
    """NAS-Bench-101's isomorphism-invariant fingerprint of a pruned cell (the key of its data set):
    vertex labels (out-degree, in-degree, op) refined n times by the sorted labels of in- and
    out-neighbours (Weisfeiler-Lehman style, md5 throughout), then the sorted final labels hashed.
    Ops are labelled input -1, output -2, interior by their index in OPS, as NAS-Bench-101 does."""
    n, m = cell.num_vertices, cell.matrix()
    labels = [-1] + [OPS.index(op) for op in cell.ops[1:-1]] + [-2]
    md5 = lambda text: hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: E731
    hashes = [md5(str((sum(m[v]), sum(r[v] for r in m), labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [md5("".join(sorted(hashes[w] for w in range(n) if m[w][v])) + "|"
                      + "".join(sorted(hashes[w] for w in range(n) if m[v][w])) + "|" + hashes[v])
                  for v in range(n)]
    return md5(str(sorted(hashes)))
