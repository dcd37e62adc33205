"""Layering: pipeline/ -> stages/ -> manifests/, read from the code's imports (ast), lazy ones too.

Every module may use pipeline/images.py (the one decode path). Two upward imports are left and
named here, so a new one fails this test and removing one means updating it: the train stage's
work in pipeline/training.py, and the manifest export's use of the stage registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"manifests": 0, "stages": 1, "pipeline": 2}
ALLOWED = {"pipeline.images"}
LEFT = {("stages/train.py", "pipeline.training"), ("manifests/export.py", "stages.base")}


def upward_imports(root: Path = ROOT) -> set[tuple[str, str]]:
    found = set()
    for package, rank in LAYER.items():
        for f in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in LAYER and LAYER[top] > rank and name not in ALLOWED:
                        found.add((f.relative_to(root).as_posix(), name))
    return found


def test_imports_point_down_but_for_the_two_named() -> None:
    assert upward_imports() == LEFT


def test_the_layer_check_sees_lazy_and_plain_upward_imports(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "stages" / "x.py").write_text("from pipeline.images import Decoded\n\ndef f():\n    from pipeline.config import RunConfig\n")
    (tmp_path / "manifests" / "y.py").write_text("import stages.base\nfrom manifests import schema\n")
    assert upward_imports(tmp_path) == {("stages/x.py", "pipeline.config"), ("manifests/y.py", "stages.base")}
