"""--profile: where the workers' time went, per step, summed over shards; and resume keeps the pixels."""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.profile import Profile, own_time
from stages.images import CLOCK, encode_jpeg


def photos(shared: Path, root: Path, n: int = 8) -> Path:
    for p in sorted((shared / "faces" / "presence").glob("*.jpg"))[:n]:
        d = root / "happy"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, d / p.name)
    return root


def read(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as fh:
        return {r["step"]: {k: float(v) for k, v in r.items() if k != "step"} for r in csv.DictReader(fh)}


def test_profile_is_written_and_sums_to_the_workers_time(shared: Path, tmp_path: Path, cli) -> None:
    inp, work = photos(shared, tmp_path / "in"), tmp_path / "work"
    t0 = time.perf_counter()
    code, out, err = cli("run", "-i", inp, "-o", work, "--stages", "compress,crop,ocr,quality,dedup,split",
                         "--workers", "1", "--shard-size", "3", "--profile", "-q")
    wall = time.perf_counter() - t0
    assert code == 0, err
    rows = read(work / "reports" / "profile.csv")
    for step in ("read", "decode", "reduce", "encode", "write", "compress", "crop", "ocr", "quality", "dedup"):
        assert rows[step]["seconds"] > 0, step
    assert "split" not in rows  # a dataset step: not part of the per-item pass
    total = sum(r["seconds"] for r in rows.values())
    assert 0 < total <= wall  # one worker in the driver: its steps cannot add up to more than the run
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1, abs=0.01)
    for r in rows.values():  # 8 photos over 3 shards
        assert r["ms_per_image"] == pytest.approx(1000 * r["seconds"] / 8, rel=0.01, abs=0.07)  # seconds rounded to 1 ms
    line = next(x for x in out.splitlines() if x.startswith("profile:"))
    assert "over 8 images" in line and str(work / "reports" / "profile.csv") in line
    # A resumed run with nothing left to do times nothing, and says so.
    code, out, _ = cli("run", "-i", inp, "-o", work, "--stages", "compress,crop,ocr,quality,dedup,split", "--workers", "1",
                       "--shard-size", "3", "--profile", "-q")
    assert code == 0 and "over 0 images" in out and "nothing timed" in out


def test_a_step_inside_a_stage_is_counted_once() -> None:
    times: Counter[str] = Counter()
    before = CLOCK["encode"]
    a = np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)

    def stage() -> bytes:
        time.sleep(0.05)
        return encode_jpeg(a, 40)

    t0 = time.perf_counter()
    own_time(times, "stage", stage)
    elapsed = time.perf_counter() - t0
    encode = CLOCK["encode"] - before
    assert encode > 0 and times["stage"] >= 0.05
    assert times["stage"] + encode == pytest.approx(elapsed, rel=0.05)
    p = Profile()
    p.add({"stage": 2.0, "decode": 1.0}, 4)
    p.add({"stage": 1.0}, 2)
    assert p.rows(["stage"]) == [("decode", 1.0), ("stage", 3.0)] and p.images == 6


def test_resumed_run_sees_the_same_reduced_pixels(shared: Path, tmp_path: Path, cli) -> None:
    """Detection and text search reduce from the full pixels when compress or crop runs before them,
    and the stages after crop see the face it cut; a run that resumes after compress, or after crop
    (whose restore cuts the face again), must give the same bytes as one that ran it all at once."""
    inp = photos(shared, tmp_path / "in", 6)
    stages = "compress,crop,ocr,quality,dedup,split"
    assert cli("run", "-i", inp, "-o", tmp_path / "a", "--stages", stages, "--workers", "1", "-q")[0] == 0
    for w, first in (("b", "compress"), ("c", "compress,crop")):
        assert cli("run", "-i", inp, "-o", tmp_path / w, "--stages", first, "--workers", "1", "-q")[0] == 0
        assert cli("run", "-i", inp, "-o", tmp_path / w, "--stages", stages, "--workers", "2", "-q")[0] == 0
    a, b, c = ((tmp_path / w / "manifest.csv").read_bytes() for w in ("a", "b", "c"))
    assert a == b == c and a.count(b"\n") > 3
    assert b"sharpness" in a.split(b"\n")[0]  # scores of the face crops are part of what must match


def test_a_worker_sets_each_stage_up_once_not_once_per_shard() -> None:
    """Every task ships its stages without their models; the worker keeps the ones it set up."""
    import pickle
    import threading

    from pipeline.shard import ready
    from stages.crop import Crop, CropParams

    def shipped(**kw: object) -> Crop:  # as a task arrives in a worker
        return pickle.loads(pickle.dumps(Crop(CropParams(detector="haar", **kw))))  # type: ignore[arg-type]

    first, second = shipped(), shipped()
    assert ready(first) is first and hasattr(first, "detector")
    assert ready(second) is first and not hasattr(second, "detector")  # the next shard's copy is never set up
    other = shipped(margin=0.3)
    assert ready(other) is other and ready(shipped()) is not first  # other parameters: set up anew, one held
    in_thread: list[Crop] = []
    t = threading.Thread(target=lambda: in_thread.append(ready(shipped())))
    t.start()
    t.join()
    assert in_thread[0] is not first and in_thread[0] is not other  # models are never shared between threads
