"""A worker that dies: its shard is retried, then recorded as failed; re-running resumes it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import crashing
import pytest

from stages.base import STAGES


@pytest.mark.slow
def test_dead_worker_fails_its_shard_then_rerun_resumes(shared: Path, tmp_path: Path, cli, monkeypatch) -> None:
    inp = tmp_path / "in" / "faces"
    inp.mkdir(parents=True)
    photos = sorted((shared / "faces/presence").glob("*.jpg"))[:12]
    for p in photos:
        shutil.copyfile(p, inp / p.name)
    shutil.copyfile(photos[0], inp / "dl_poison.jpg")
    work = tmp_path / "w"
    args = ("run", "-i", tmp_path / "in", "-o", work, "--workers", "2", "--backend", "loky", "--shard-size", "4", "--retries", "1")

    monkeypatch.setitem(STAGES, "compress", crashing.DiesOnPoison)
    code, _, err = cli(*args)
    assert code == 1
    assert "some shards failed" in err and "re-run" in err
    names = sorted(p.name for p in inp.iterdir())
    poison_shard = names.index("dl_poison.jpg") // 4
    in_shard = [n for i, n in enumerate(names) if i // 4 == poison_shard]
    assert len(in_shard) == 4
    code, status, _ = cli("status", work)
    assert code == 1 and f"[failed shards: {poison_shard}]" in status
    with open(work / "reports/rejected.csv", encoding="utf-8") as f:
        failed = [r for r in csv.DictReader(f) if r["reason"] == "worker_crash"]
    assert {r["key"] for r in failed} == {f"faces/{n}" for n in in_shard}
    assert {r["stage"] for r in failed} == {"compress"}
    kept_before = (work / "manifest.csv").read_text().count("\n") - 1
    assert kept_before == 13 - 4

    monkeypatch.setitem(STAGES, "compress", crashing.Compress)  # the healthy stage, same fingerprint
    code, _out, err = cli(*args)
    assert code == 0, err
    assert "1 of 4 shards to do" in err
    assert (work / "manifest.csv").read_text().count("\n") - 1 == 13
    assert cli("status", work)[0] == 0
