"""kill -9 at random moments, re-run each time: the end result equals an uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stages.images import Decoded

ROOT = Path(__file__).resolve().parents[1]


def make_input(shared: Path, root: Path, copies: int = 4) -> None:
    photos = sorted((shared / "faces").rglob("*.jpg")) + sorted((shared / "faces").rglob("*.png"))
    for c in range(copies):
        for p in photos:
            d = root / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, d / p.name)
    (root / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 100)


def command(inp: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "-i", str(inp), "-o", str(work), "--workers", "2",
            "--shard-size", "6", "-q"]


def done_markers(work: Path) -> int:
    return len(list((work / "manifests").glob("*/part-*.done")))


def run(inp: Path, work: Path, kill_at: tuple[int, float] | None = None) -> bool:
    """Run to the end, or SIGKILL the whole process group once *kill_at* = (markers, extra seconds)
    is reached; returns whether it was killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command(inp, work), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_at is not None:
        markers, extra = kill_at
        while proc.poll() is None and done_markers(work) < markers:
            time.sleep(0.01)
        time.sleep(extra)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-flight
            proc.wait()
            return True
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return False


def outcomes(work: Path) -> dict[str, list[dict]]:
    out = {}
    for part in sorted((work / "manifests").glob("*/part-*.parquet")):
        if part.with_suffix(".done").exists():
            out[str(part.relative_to(work))] = pq.read_table(part).to_pylist()
    return out


@pytest.mark.slow
def test_kill_9_five_times_then_resume_equals_an_uninterrupted_run(shared: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    make_input(shared, inp)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run(inp, clean)
    total = done_markers(clean)
    rng = random.Random(1234)
    # Five kills at random points: before any shard finished, then after ever more markers,
    # each at a random instant a little after the marker count was reached.
    targets = [0, *sorted(rng.sample(range(1, total - 2), 4))]
    kills = [run(inp, killed, (t, rng.uniform(0, 0.3))) for t in targets]
    assert all(kills), kills
    run(inp, killed)
    for name in ("manifest.csv", "reports/rejected.csv"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert outcomes(killed) == outcomes(clean)
    artifacts = sorted(p for p in (killed / "images").rglob("*") if p.is_file())
    assert not [p for p in artifacts if p.name.startswith(".")], "temporary files left behind"
    assert len(artifacts) == (clean / "manifest.csv").read_text().count("\n") - 1
    for p in artifacts:
        assert Decoded.from_bytes(p.read_bytes()).full().size > 0
