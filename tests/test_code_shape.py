"""The code's shape: no import cycle in liveroom/ or bench/, and no module over 400 lines.

Every import counts, at module level, in a function or under TYPE_CHECKING.

The graph is read from the source with ``ast``. Importing ``a.b.c`` runs the
``__init__`` of ``a.b`` and ``a`` first, so it depends on them too, unless the
importer lives inside that package (whose ``__init__`` is then running already).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` (at ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            targets.add(mod)
            targets.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    out = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        while t:  # the module, and the packages around it that the importer is not inside of
            if t != name and not (name + ".").startswith(t + "."):
                out.add(t)
            t = t.rpartition(".")[0]
    return out & known.keys()


def cycles(package: Path) -> list[list[str]]:
    """Every strongly connected set of more than one module (or a module importing itself), sorted."""
    known = modules(package)
    return strongly_connected({n: imports(n, p, known) for n, p in known.items()})


def script_cycles(folder: Path) -> list[list[str]]:
    """The same for a folder of scripts that import each other by bare name (bench/: ``from harness import``)."""
    known = {p.stem: p for p in sorted(folder.glob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.partition(".")[0])
        graph[name] = found & known.keys()
    return strongly_connected(graph)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, iterative enough for a package of this size
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_liveroom_has_no_import_cycle():
    assert cycles(ROOT / "liveroom") == []


def test_bench_has_no_import_cycle():
    assert script_cycles(ROOT / "bench") == []


MAX_LINES = 400


def test_no_module_is_over_400_lines():
    files = [*ROOT.joinpath("liveroom").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py"), *ROOT.joinpath("bin").iterdir()]
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_bench_check_finds_a_cycle(tmp_path):
    (tmp_path / "one.py").write_text("from two import x\n")
    (tmp_path / "two.py").write_text("import json\n")
    assert script_cycles(tmp_path) == []
    (tmp_path / "two.py").write_text("def f():\n    import one\n")
    assert script_cycles(tmp_path) == [["one", "two"]]


def test_the_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import B\n")
    (pkg / "sub" / "b.py").write_text("from .c import C\nB = 1\n")  # inside sub: no edge to sub's __init__
    (pkg / "sub" / "c.py").write_text("C = 1\n")
    (pkg / "a.py").write_text("def f():\n    from .sub.c import C\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    assert cycles(pkg) == []
    (pkg / "sub" / "c.py").write_text("def g():\n    from .. import a\n")  # a -> sub (its __init__) -> b -> c -> a
    assert cycles(pkg) == [["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"]]
    (pkg / "a.py").write_text("from . import d\n")
    assert cycles(pkg) == [["pkg.a", "pkg.d"]]
