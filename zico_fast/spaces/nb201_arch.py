"""NAS-Bench-201 architecture strings: the ops and edges, parsing and writing cells, and the
benchmark's index order. Shared by the space (nb201.py) and the networks' builders."""
from __future__ import annotations

import functools
import random
import re

# Op order and edge order are NAS-Bench-201's own: the index order below is defined in terms of them.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to node, from node), in string order
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
FORMAT = ("expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' (node 1, 2, 3 with one op per earlier node), "
          "op one of " + ", ".join(OPS) + ", e.g. "
          "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'")
_ENTRY = re.compile(r"([a-z0-9_]+)~(\d+)")


# Parsed strings: a search parses each arch several times (canonical, key, cost, build); the
# canonical strings _to_string writes are entered as it writes them. Bounded: cleared when full.
_PARSED: dict[str, tuple[int, ...]] = {}
_PARSED_MAX = 1 << 16


@functools.lru_cache(maxsize=None)  # 15,625 possible cells
def _to_string(ops: tuple[int, ...]) -> str:
    names = [f"{OPS[o]}~{src}" for o, (_, src) in zip(ops, EDGES)]
    text = "|" + "|+|".join("|".join(names[a:b]) for a, b in ((0, 1), (1, 3), (3, 6))) + "|"
    _remember(text, ops)
    return text


def _remember(arch: str, ops: tuple[int, ...]) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[arch] = ops


def _parse(arch: str) -> tuple[int, ...]:
    """Op indices of the 6 edges in EDGES order; entries of a node may come in any order."""
    if not isinstance(arch, str):
        raise ValueError(f"NB201 architecture must be a string, got {type(arch).__name__}; {FORMAT}")
    ops = _PARSED.get(arch)
    if ops is None:
        ops = _parse_string(arch)
        _remember(arch, ops)
    return ops


def _parse_string(arch: str) -> tuple[int, ...]:
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"{arch!r} has {len(nodes)} node groups separated by '+', need 3; {FORMAT}")
    ops: dict[tuple[int, int], int] = {}
    for node, group in enumerate(nodes, start=1):
        if len(group) < 2 or group[0] != "|" or group[-1] != "|":
            raise ValueError(f"node {node} group {group!r} of {arch!r} must start and end with '|'; {FORMAT}")
        for entry in group[1:-1].split("|"):
            m = _ENTRY.fullmatch(entry)
            if m is None:
                raise ValueError(f"entry {entry!r} of node {node} in {arch!r} is not 'op~input'; {FORMAT}")
            name, src = m.group(1), int(m.group(2))
            if name not in OPS:
                raise ValueError(f"unknown op {name!r} in {arch!r}; {FORMAT}")
            if src >= node:
                raise ValueError(f"node {node} cannot take input from node {src} in {arch!r}; {FORMAT}")
            if (node, src) in ops:
                raise ValueError(f"node {node} has two ops from node {src} in {arch!r}; {FORMAT}")
            ops[(node, src)] = OPS.index(name)
        if len(ops) != node * (node + 1) // 2:
            raise ValueError(f"node {node} of {arch!r} needs exactly one op from each of nodes "
                             f"0..{node - 1}; {FORMAT}")
    return tuple(ops[e] for e in EDGES)


@functools.lru_cache(maxsize=None)
def _index_order() -> tuple[tuple[int, ...], dict[int, int]]:
    """NATS-Bench-TSS index -> lexicographic code, and its inverse.

    NAS-Bench-201 listed the cells lexicographically (first edge slowest, ops in OPS order) and then
    shuffled that list with Python's `random.seed(88); random.shuffle(archs)`.  The shuffle is spelt out
    here (Fisher-Yates over the Mersenne Twister's getrandbits, exactly what CPython's shuffle does) so
    that a future change to `random.shuffle` cannot silently reorder the indices.
    """
    mt, order = random.Random(88), list(range(NUM_ARCHS))
    for i in range(NUM_ARCHS - 1, 0, -1):
        bits = (i + 1).bit_length()
        j = mt.getrandbits(bits)
        while j > i:  # rejection sampling gives a uniform j in [0, i]
            j = mt.getrandbits(bits)
        order[i], order[j] = order[j], order[i]
    return tuple(order), {code: index for index, code in enumerate(order)}


def _code(ops: tuple[int, ...]) -> int:
    code = 0
    for o in ops:
        code = code * len(OPS) + o
    return code
