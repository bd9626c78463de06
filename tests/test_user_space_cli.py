"""A user's own SearchSpace on the command line (--space file.py:Class or module:Class) for score,
search and correlate: the README's example space (examples/tiny_space.py, included verbatim in the
README) scores as the library scores it, and every way a user's space can be broken is one line."""
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from zico_fast.cli import main
from zico_fast.data import make_batches
from zico_fast.engine import build_seeded, evaluate
from zico_fast.engine.repro import torch_settings
from zico_fast.spaces import NumberedSpace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny_space.py"
SPEC = f"{EXAMPLE}:TinySpace"
DATA = ["--synthetic", "--batch-size", "8"]


def tiny_space():
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        from tiny_space import TinySpace
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return TinySpace()


def test_the_readme_shows_the_tested_example_space_verbatim():
    code = EXAMPLE.read_text()
    body = code[code.index("from random import Random"):]  # the docstring names the file instead
    assert body in (ROOT / "README.md").read_text()


def test_score_with_a_file_space_equals_the_library(tmp_path):
    out = tmp_path / "score.json"
    assert main(["score", "--space", SPEC, "--arch", "8-16-32", *DATA, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    space = tiny_space()
    batches = make_batches(None, 8, 2, 0, synthetic=True, resolution=32)
    with torch_settings(1):
        want = evaluate(build_seeded(space, "8-16-32", 0), batches)["zico"]
    assert report["score"] == want and report["params"] == space.cost("8-16-32").params


def test_module_form_and_constructor_options(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)  # 'tiny_space' imports from the current folder, as with python -m
    out = tmp_path / "score.json"
    assert main(["score", "--space", "tiny_space:TinySpace", "--arch", "8-8-8", *DATA, "--resolution", "16",
                 "--num-classes", "5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["resolution"] == 16  # the flags reach the space's constructor
    assert report["params"] == tiny_space().__class__(num_classes=5, resolution=16).cost("8-8-8").params != \
        tiny_space().cost("8-8-8").params


@pytest.mark.slow
def test_search_and_correlate_run_a_file_space_on_worker_processes(tmp_path):
    out = tmp_path / "search"
    assert main(["search", "--space", SPEC, "--iterations", "6", "--population", "4", "--generation", "3", *DATA,
                 "--workers", "2", "--no-progress", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "candidates.csv")))
    assert len(rows) == 6 and all(r["error"] == "" for r in rows)
    truth = tmp_path / "truth.csv"  # a space without an index: no arch_index column
    truth.write_text("arch_string,acc\n8-8-8,60\n16-16-16,70\n32-32-32,80\n8-16-32,75\n")
    assert main(["correlate", "--space", SPEC, "--truth", str(truth), "--truth-column", "acc", *DATA,
                 "--no-progress", "--out", str(tmp_path / "cor")]) == 0
    report = json.loads((tmp_path / "cor" / "report.json").read_text())
    assert report["n"] == 4 and report["failed"] == []


BROKEN = {
    "syntax.py": ("class S(:\n", "syntax.py line 1"),
    "raises.py": ("raise RuntimeError('no GPU here')\n", "importing .*raises.py raised RuntimeError: no GPU here"),
    "notaspace.py": ("class S:\n    pass\n", "is class S, not a subclass of zico_fast.spaces.SearchSpace"),
    "function.py": ("def S():\n    pass\n", "is a function, not a subclass"),
    "abstract.py": ("from zico_fast.spaces import SearchSpace\nclass S(SearchSpace):\n    pass\n",
                    "S does not define build, canonical, cost, initial, mutate, random"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_space_file_is_one_line(tmp_path, capsys, name):
    code, message = BROKEN[name]
    path = tmp_path / name
    path.write_text(code)
    assert main(["score", "--space", f"{path}:S", "--arch", "x", *DATA]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and re.search(message, err), err


def broken_method(tmp_path, method: str, body: str) -> str:
    """examples/tiny_space.py with one method replaced by `body` (a file of the user's)."""
    code = EXAMPLE.read_text().replace(f"    def {method}(self, ", f"    def _replaced_{method}(self, ", 1)
    code = code.replace("class TinySpace(SearchSpace):", "class TinySpace(SearchSpace):\n"
                        f"    def {method}(self, *args):\n        {body}\n", 1)
    path = tmp_path / f"broken_{method}.py"
    path.write_text(code)
    return f"{path}:TinySpace"


@pytest.mark.parametrize("method", ["random", "mutate", "initial", "cost", "canonical"])
def test_a_method_that_raises_is_one_line_before_any_work(tmp_path, capsys, method):
    spec = broken_method(tmp_path, method, "raise KeyError('oops')")
    assert main(["search", "--space", spec, "--iterations", "2", *DATA, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"TinySpace.{method} raised KeyError: 'oops'" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "search.jsonl").exists()


def test_a_build_that_raises_names_the_users_file_and_line(tmp_path, capsys):
    spec = broken_method(tmp_path, "build", "return {}['layer']")
    assert main(["score", "--space", spec, "--arch", "8-8-8", *DATA]) == 2
    err = capsys.readouterr().err
    assert "build raised KeyError: 'layer' (broken_build.py line " in err and err.count("\n") == 1


def test_an_unknown_space_name_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["search", "--space", "nb999", "--out", "x"])
    assert stop.value.code == 2 and "neither a space" in capsys.readouterr().err


class NumberedTiny(NumberedSpace):
    """The tiny space numbered: its 27 width triples in base-3 order; only the numbering is new."""

    name, size = "numbered-tiny", 27

    def __init__(self):
        self.tiny = tiny_space()
        self.num_classes, self.resolution = 10, 32

    def canonical(self, arch):
        return self.tiny.canonical(arch)

    def mutate(self, arch, rng, num_blocks=1):
        return self.tiny.mutate(arch, rng, num_blocks)

    def build(self, arch):
        return self.tiny.build(arch)

    def cost(self, arch):
        return self.tiny.cost(arch)

    def index_of(self, arch):
        return sum((8, 16, 32).index(w) * 3 ** (2 - i) for i, w in enumerate(self.tiny.widths(arch)))

    def arch_from_index(self, index):
        index = self.checked_index(index)
        return "-".join(str((8, 16, 32)[index // 3 ** (2 - i) % 3]) for i in range(3))


def test_a_numbered_user_space_draws_and_lists_by_its_numbering():
    import random

    space = NumberedTiny()
    listing = list(space.enumerate())
    assert len(set(listing)) == 27 and [space.index_of(a) for a in listing] == list(range(27))
    draws, reference = random.Random(5), random.Random(5)
    assert [space.random(draws) for _ in range(20)] == [listing[reference.randrange(27)] for _ in range(20)]
    assert space.initial(random.Random(1)) == listing[random.Random(1).randrange(27)]
    assert space.arch_from_index(np.int64(26)) == listing[26]  # numpy's integers are integers too
    for bad in (-1, 27, True, 2.0):
        with pytest.raises(ValueError, match=r"numbered-tiny index must be in 0\.\.26"):
            space.arch_from_index(bad)
