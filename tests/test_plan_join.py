"""join_plan (csrc/plan_join.cpp), the native half of a reused NB201 build, against the plain Python
join it replaces: the same lists of the same objects, reference counts left balanced, and a clear
TypeError (never a crash) for anything that is not the walk it expects."""
import random
import sys
from itertools import chain

import pytest

from zico_fast._C import join_plan


def python_join(walk, slots, used):
    """What join_plan returns, the slow way (the reused build's former join)."""
    parts, cell_ops = [], []
    for piece in walk:
        if isinstance(piece, tuple):
            parts.append(piece)
            continue
        chosen = [piece[slot] for slot in slots]
        if any(entry is None for entry in chosen):
            return None
        cell_ops.append(tuple(module for module, _ in chosen))
        parts += [columns for _, columns in chosen]
    return [list(chain.from_iterable(part[c] for part in parts)) for c in range(used)], cell_ops


class Item:
    pass


def random_walk(rng, width, table_size, cells):
    def columns():
        return tuple(tuple(Item() for _ in range(rng.choice((0, 0, 1, 3, 40)))) for _ in range(width))

    walk = [columns()]
    for _ in range(cells):
        walk += [[(Item(), columns()) for _ in range(table_size)], columns()]
    return walk


@pytest.mark.parametrize("trial", range(4))
def test_join_plan_is_the_python_join(trial):
    seed = random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    width, table_size, edges = rng.randint(1, 12), rng.randint(1, 30), rng.randint(0, 6)
    walk = random_walk(rng, width, table_size, cells=rng.randint(0, 17))
    slots = tuple(rng.randrange(table_size) for _ in range(edges))
    used = rng.randint(0, width)
    items = [x for piece in walk for x in (piece if isinstance(piece, tuple) else
                                          [e[0] for e in piece] + [y for _, cols in piece for y in cols])]
    counts = [sys.getrefcount(x) for x in items]
    ours, theirs = join_plan(walk, slots, used), python_join(walk, slots, used)
    assert len(ours[0]) == used, seed
    assert [[id(x) for x in column] for column in ours[0]] == [[id(x) for x in column] for column in theirs[0]], seed
    assert [[id(m) for m in ops] for ops in ours[1]] == [[id(m) for m in ops] for ops in theirs[1]], seed
    del ours, theirs
    assert [sys.getrefcount(x) for x in items] == counts, f"reference counts changed (seed {seed})"


def test_join_plan_asks_for_ops_not_built_yet():
    rng = random.Random(0)
    walk = random_walk(rng, width=3, table_size=5, cells=3)
    walk[3][2] = None  # the second cell's slot 2
    assert join_plan(walk, (0, 1, 4), 3) is not None  # slot 2 not chosen
    assert join_plan(walk, (0, 2), 3) is None


@pytest.mark.parametrize("args,message", [
    (([], (0,)), r"join_plan\(walk: list"),
    (((), (0,), 1), r"join_plan\(walk: list"),
    (([()], [0], 1), r"join_plan\(walk: list"),
    (([()], (0,), -1), "used must be >= 0"),
    (([[(Item(), ((),))]], (-1,), 1), "slots must be >= 0"),
    (([[(Item(), ((),))]], ("0",), 1), "an integer is required|'str' object cannot be interpreted"),
    (([[(Item(), ((),))]], (1,), 1), "a slot past a cell's table"),
    (([{}], (0,), 1), "walk items must be tuples"),
    (([[Item()]], (0,), 1), "a table entry must be"),
    (([[(Item(), [()])]], (0,), 1), "a table entry must be"),
    (([((),)], (0,), 2), "fewer columns than `used`"),
    (([([],)], (0,), 1), "a part's columns must be tuples"),
])
def test_join_plan_refuses_what_it_cannot_read(args, message):
    with pytest.raises(TypeError, match=message):
        join_plan(*args)
