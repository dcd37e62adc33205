"""End to end through the CLI: awkward inputs, determinism across backends, resume, invalidation."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import corpus
import numpy as np
import pytest
from PIL import Image

from stages.images import Decoded


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nasty(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("nasty") / "in"
    expected = corpus.nasty_tree(root, shared / "faces/presence/fr_obama.jpg")
    return root, expected


def test_every_awkward_input_is_a_row_with_a_reason_or_a_correct_output(nasty, tmp_path, cli) -> None:
    root, expected = nasty
    work = tmp_path / "w"
    code, out, err = cli("run", "--input", root, "--out", work, "--stages", "compress", "--workers", "2", "--shard-size", "4")
    assert code == 0, err
    kept = {r["key"]: r for r in read_csv(work / "manifest.csv")}
    rejected = {r["key"]: r for r in read_csv(work / "reports/rejected.csv")}
    assert not set(kept) & set(rejected)
    got = {k: "kept" for k in kept} | {k: r["reason"] for k, r in rejected.items()}
    assert got == expected
    assert all(r["detail"] for r in rejected.values())
    ref = np.asarray(corpus.reference(), int)
    for key, row in kept.items():
        im = Decoded.from_bytes((work / row["file"]).read_bytes())
        assert im.format == "JPEG" and (im.size == (int(row["width"]), int(row["height"])))
        if key.startswith("happy/orient_"):
            assert np.abs(im.full().astype(int) - ref).mean() < 10, f"{key} not upright"
    assert (work / "images/compressed/happy/기쁨 사진 (1) & co.jpg").is_file()
    assert "decode_error 3" in out and "unsafe_path 3" in out


def test_png_and_webp_inputs_become_jpg_files(nasty, tmp_path, cli) -> None:
    root, _ = nasty
    work = tmp_path / "w"
    assert cli("run", "-i", root, "-o", work, "--workers", "1", "--compress-quality", "60")[0] == 0
    rows = {r["key"]: r for r in read_csv(work / "manifest.csv")}
    assert rows["happy/sixteen.png"]["file"] == "images/compressed/happy/sixteen.jpg"
    with Image.open(work / rows["happy/webp_named.jpg"]["file"]) as im:
        assert im.format == "JPEG"


def fifty_photos(shared: Path, tmp_path: Path) -> Path:
    """The 41 presence and 9 group photos of ../shared/data/faces, copied into two class folders."""
    root = tmp_path / "faces"
    for sub in ("presence", "groups"):
        (root / sub).mkdir(parents=True)
        for f in (shared / "faces" / sub).iterdir():
            shutil.copyfile(f, root / sub / f.name)
    return root


def test_compress_shrinks_real_photos_at_quality_40(shared, tmp_path, cli) -> None:
    work = tmp_path / "w"
    code, out, _ = cli("run", "-i", fifty_photos(shared, tmp_path), "-o", work, "--workers", "1")
    assert code == 0
    rows = read_csv(work / "manifest.csv")
    assert len(rows) == 50
    total_in = sum(int(r["bytes_in"]) for r in rows)
    total_out = sum(int(r["bytes_out"]) for r in rows)
    assert total_out < total_in / 3
    assert "x smaller" in out


@pytest.mark.slow
def test_same_manifest_for_every_backend_and_worker_count(nasty, tmp_path, cli) -> None:
    root, _ = nasty
    outputs = {}
    for backend, workers in (("sequential", 1), ("loky", 1), ("loky", 2), ("dask", 2)):
        work = tmp_path / f"{backend}{workers}"
        code, _, err = cli("run", "-i", root, "-o", work, "--backend", backend, "--workers", workers, "--shard-size", "3")
        assert code == 0, err
        outputs[(backend, workers)] = ((work / "manifest.csv").read_bytes(), (work / "reports/rejected.csv").read_bytes())
    first = next(iter(outputs.values()))
    assert all(v == first for v in outputs.values())
    assert first[0].count(b"\n") > 15


def test_rerun_skips_done_shards_and_a_changed_parameter_recomputes(shared, tmp_path, cli, caplog) -> None:
    work = tmp_path / "w"
    args = ("run", "-i", shared / "faces", "-o", work, "--workers", "1", "--shard-size", "16")
    assert cli(*args)[0] == 0
    part = work / "manifests/compress/part-00000.parquet"
    stamp = part.stat().st_mtime_ns
    first = (work / "manifest.csv").read_bytes()
    assert cli(*args)[0] == 0
    assert part.stat().st_mtime_ns == stamp and (work / "manifest.csv").read_bytes() == first
    assert "every shard already done" in caplog.text
    assert cli(*args, "--compress-quality", "80")[0] == 0
    assert "quality 40 -> 80" in caplog.text
    assert (work / "manifest.csv").read_bytes() != first
    rows = read_csv(work / "manifest.csv")
    assert sum(int(r["bytes_out"]) for r in rows) > sum(int(r["bytes_out"]) for r in csv.DictReader(first.decode().splitlines()))


def test_dry_run_writes_nothing_and_says_what_would_run(shared, tmp_path, cli) -> None:
    work = tmp_path / "w"
    code, out, _ = cli("run", "-i", fifty_photos(shared, tmp_path), "-o", work, "--dry-run")
    assert code == 0 and not work.exists()
    assert "50 items" in out and "compress" in out and "0/" in out


def test_status_shows_counts(nasty, tmp_path, cli) -> None:
    root, expected = nasty
    work = tmp_path / "w"
    cli("run", "-i", root, "-o", work, "--workers", "1", "--shard-size", "5")
    code, out, _ = cli("status", work)
    assert code == 0
    n_refused = sum(v in ("unreadable", "unsafe_path") for v in expected.values())
    assert f"{len(expected)} items" in out and f"refused at ingest: {n_refused}" in out
    line = next(line for line in out.splitlines() if line.startswith("compress"))
    kept = sum(v == "kept" for v in expected.values())
    assert line.split()[1:6] == ["5", "0", str(kept), str(len(expected) - kept - n_refused), "0"]
    assert "decode_error" in line


def test_config_file_and_flags_merge(shared, tmp_path, cli) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\ninput = "{shared / "faces"}"\nworkers = 1\n[compress]\nquality = 90\nmax_side = 200\n')
    work = tmp_path / "w"
    assert cli("run", "--config", cfg, "--out", work, "--compress-max-side", "100")[0] == 0
    rows = read_csv(work / "manifest.csv")
    assert rows and all(max(int(r["width"]), int(r["height"])) == 100 for r in rows)
    assert 'quality = 90' in (work / "run.toml").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--stages", "compress,nope", "-i", "in", "-o", "w"], "unknown stage(s) nope"),
        (["run", "-i", "/does/not/exist", "-o", "w"], "does not exist"),
        (["run", "-i", "in", "-o", "w", "--workers", "0"], "workers must be >= 1"),
        (["run", "-i", "in", "-o", "w", "--workers", "two"], "expected int"),
        (["run", "-i", "in", "-o", "w", "--backend", "spark"], "backend must be one of"),
        (["run", "-i", "in", "-o", "w", "--scheduler", "tcp://x:1", "--backend", "loky"], "--scheduler only works"),
        (["run", "-i", "in", "-o", "w", "--compress-quality", "0"], "compress.quality must be 1-100"),
        (["run", "-i", "in", "-o", "w", "--layout", "coco"], "layout must be one of"),
        (["run", "-i", "in", "-o", "w", "--label-policy", "vote"], "label-policy must be one of"),
        (["run", "-i", "in", "-o", "w", "--alias", "nothing"], "--alias takes RAW=LABEL"),
        (["run", "-i", "in", "-o", "in/w"], "inside --input"),
        (["run", "--frobnicate"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        (["status", "/does/not/exist"], "not a facesift workspace"),
        (["run", "-i", "in", "-o", "w", "--stages", ""], "no stage given (--stages is empty)"),
        (["run", "-i", "in", "-o", "w", "--stages", " , "], "no stage given (--stages is empty)"),
        (["run", "-i", "in", "-o", "w", "--config", "/no/such.toml"], "not found"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, message, tmp_path, monkeypatch, capsys) -> None:
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists()


def test_every_subcommand_and_option_has_help_text() -> None:
    import argparse

    from pipeline.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices
    for name, p in sub.choices.items():
        assert any(c.dest == name and c.help for c in sub._choices_actions), f"{name} has no help"
        for action in p._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
