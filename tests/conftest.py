"""Shared fixtures: the real sample data beside the checkout, and a CLI runner."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESIFT_SHARED", ROOT.parent / "shared")) / "data"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/data: real photos with labels (faces, text, fer2013, aihub_json)."""
    if not SHARED.is_dir():
        pytest.fail(f"the shared sample data is missing at {SHARED} (set FACESIFT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def dev_truth(shared: Path) -> dict[str, list[tuple[tuple[float, ...], str]]]:
    """faces/dev's truth: per file, its boxes (x, y, w, h) and their kinds (with_mask, without_mask, face)."""
    out: dict[str, list[tuple[tuple[float, ...], str]]] = {}
    with open(shared / "faces" / "dev" / "boxes.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["file"], []).append((tuple(float(r[k]) for k in "xywh"), r["kind"]))
    return out


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):
    """Call ``facesift`` in-process: returns (exit code, stdout, stderr)."""
    from pipeline.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
