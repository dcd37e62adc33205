"""Layering: pipeline/ -> stages/ -> manifests/, read from the code's imports (ast), lazy ones too.

No module imports a layer above its own, and no two modules of the three packages import each
other, directly or round a longer circle (a package's ``__init__`` counts as the package).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"manifests": 0, "stages": 1, "pipeline": 2}


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for package in LAYER:
        for f in sorted((root / package).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(f: Path, name: str, known: dict[str, Path]) -> Iterator[str]:
    """Modules of the three packages that *f* (module *name*) imports, anywhere in its body."""
    package = name if f.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:  # `from pkg import mod` imports the module pkg.mod
                yield f"{base}.{a.name}" if f"{base}.{a.name}" in known else base


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = _modules(root)
    return {name: {m for m in _imports(f, name, known) if m.split(".")[0] in LAYER and m != name} for name, f in known.items()}


def upward_imports(root: Path = ROOT) -> set[tuple[str, str]]:
    found = set()
    known = _modules(root)
    for name, deps in graph(root).items():
        for dep in deps:
            if LAYER[dep.split(".")[0]] > LAYER[name.split(".")[0]]:
                found.add((known[name].relative_to(root).as_posix(), dep))
    return found


def circles(root: Path = ROOT) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    g = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
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
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down() -> None:
    assert upward_imports() == set()


def test_no_import_circles() -> None:
    assert circles() == []


def test_the_layer_check_sees_lazy_and_plain_upward_imports(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "stages" / "x.py").write_text("from stages.y import f\n\ndef g():\n    from pipeline.config import RunConfig\n")
    (tmp_path / "stages" / "y.py").write_text("def f():\n    from stages import x\n")
    (tmp_path / "manifests" / "y.py").write_text("import stages.base\nfrom manifests import schema\n")
    (tmp_path / "pipeline" / "config.py").write_text("")
    assert upward_imports(tmp_path) == {("stages/x.py", "pipeline.config"), ("manifests/y.py", "stages.base")}
    assert circles(tmp_path) == [["stages.x", "stages.y"]]
