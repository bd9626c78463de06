"""No import circles among zico_fast's modules: found by reading the sources (ast), so a circle is
seen whether or not a test happens to import its modules in the order that breaks."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zico_fast"
# Modules without a .py file: the extension setup.py builds from csrc/ (absent before the build).
NATIVE = ("zico_fast._C",)


def module_files(package: Path) -> dict[str, Path]:
    """{dotted name: file} of every module of `package`; a package is named by its __init__.py."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(tree: ast.Module, in_functions: bool):
    """The import statements run when the module loads (in class bodies, branches and try blocks too;
    not under `if TYPE_CHECKING`), and with in_functions those inside functions as well."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_functions:
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
        else:
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, (ast.stmt, ast.excepthandler))]


def import_graph(package: Path, in_functions: bool, native=()) -> dict[str, set[str]]:
    """{module: the package's modules it imports}. `from pkg import name` imports pkg.name when that
    is a module, else pkg (its __init__)."""
    files = module_files(package)
    known = set(files) | set(native)
    graph = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in imports(ast.parse(path.read_text(encoding="utf-8")), in_functions):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..engine import y
                parent = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph, found) -> str:
    return "; ".join(" <-> ".join(c) + " (" + ", ".join(f"{v} imports {sorted(graph[v] & set(c))}" for v in c) + ")"
                     for c in found)


@pytest.mark.parametrize("in_functions", [False, True], ids=["top-level", "with-imports-in-functions"])
def test_no_import_circle_in_the_package(in_functions):
    """Top level: a circle there breaks depending on which module is imported first. With the
    imports inside functions too: the layering issue 27 asked for (pool <-> ray_backend via
    make_backend, and nb201 <-> nb201_reuse, were circles of that kind)."""
    graph = import_graph(PACKAGE, in_functions, NATIVE)
    assert len(graph) > 50 and "zico_fast.engine.backends" in graph["zico_fast.parallel"]
    found = cycles(graph)
    assert not found, describe(graph, found)


def test_the_scan_finds_circles(tmp_path):
    """The scanner on a made-up package: a circle closed inside a function, a relative import, an
    import guarded by TYPE_CHECKING (ignored) and `from pkg import module`."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n")
    (package / "d.py").write_text("import pkg.c\n")
    assert cycles(import_graph(package, in_functions=False)) == []
    assert cycles(import_graph(package, in_functions=True)) == [["pkg.a", "pkg.sub.b"]]
    assert import_graph(package, in_functions=True)["pkg.c"] == set()
