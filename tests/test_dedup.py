"""dedup: exact and near copies of real photos found, distinct photos kept apart, label conflicts,
thresholds re-decided without re-hashing, and the index join checked against brute force."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.dedup import DedupParams, find_groups, hashes
from stages.phash import components, hamming, near_pairs, phash, unhex


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["key"]: r for r in csv.DictReader(f)}


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def save(a: np.ndarray, path: Path, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=quality)


@pytest.fixture()
def copies(tmp_path: Path, shared: Path) -> Path:
    """happy/: obama and an exact copy, a q40 re-encode, a half-size copy; three other real photos."""
    src = shared / "faces" / "presence"
    d = tmp_path / "in" / "happy"
    d.mkdir(parents=True)
    shutil.copy(src / "fr_obama.jpg", d / "a_obama.jpg")
    shutil.copy(src / "fr_obama.jpg", d / "b_copy.jpg")
    a = rgb(src / "fr_obama.jpg")
    save(a, d / "c_q40.jpg", quality=40)
    save(cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA), d / "d_half.jpg")
    for name in ("dl_tom_cruise.jpg", "fp_kate_siegel.jpg", "fr_obama1.jpg"):
        shutil.copy(src / name, d / name)
    return tmp_path / "in"


def test_exact_q40_and_resized_copies_are_duplicates_of_the_kept_original(copies: Path, tmp_path: Path, cli) -> None:
    code, out, _ = cli("run", "--input", copies, "--out", tmp_path / "w", "--stages", "dedup", "--workers", "1")
    assert code == 0, out
    kept = rows(tmp_path / "w" / "manifest.csv")
    rejected = rows(tmp_path / "w" / "reports" / "rejected.csv")
    # The original wins: as many pixels as the exact copy and the q40 one, and the smallest key.
    assert kept["happy/a_obama.jpg"]["dup_group"] == "happy/a_obama.jpg"
    assert rejected["happy/b_copy.jpg"]["reason"] == "duplicate"
    assert rejected["happy/b_copy.jpg"]["detail"] == "exact copy of happy/a_obama.jpg"
    for key in ("happy/c_q40.jpg", "happy/d_half.jpg"):
        assert rejected[key]["reason"] == "duplicate"
        assert rejected[key]["detail"].startswith("near duplicate of happy/a_obama.jpg (distance ")
    # Different photos, one of them another photo of the same person, stay, each in no group.
    for key in ("happy/dl_tom_cruise.jpg", "happy/fp_kate_siegel.jpg", "happy/fr_obama1.jpg"):
        assert kept[key]["dup_group"] == ""
    assert len(kept) == 4 and len(rejected) == 3


def test_the_largest_copy_stays_whatever_its_key(tmp_path: Path, shared: Path, cli) -> None:
    a = rgb(shared / "faces" / "presence" / "fp_kate_siegel.jpg")
    save(cv2.resize(a, (a.shape[1] // 3, a.shape[0] // 3), interpolation=cv2.INTER_AREA), tmp_path / "in" / "sad" / "a_small.jpg")
    save(a, tmp_path / "in" / "sad" / "z_large.jpg")
    assert cli("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "dedup", "--workers", "1")[0] == 0
    assert list(rows(tmp_path / "w" / "manifest.csv")) == ["sad/z_large.jpg"]
    assert rows(tmp_path / "w" / "reports" / "rejected.csv")["sad/a_small.jpg"]["detail"].startswith("near duplicate of sad/z_large.jpg")


def test_copies_with_different_labels_are_all_label_conflict(tmp_path: Path, shared: Path, cli) -> None:
    src = shared / "faces" / "presence"
    for label, name in (("happy", "obama.jpg"), ("sad", "obama_again.jpg"), ("happy", "cruise.jpg")):
        (tmp_path / "in" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / ("dl_tom_cruise.jpg" if name == "cruise.jpg" else "fr_obama.jpg"), tmp_path / "in" / label / name)
    assert cli("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "dedup", "--workers", "1")[0] == 0
    rejected = rows(tmp_path / "w" / "reports" / "rejected.csv")
    assert {k: r["reason"] for k, r in rejected.items()} == {"happy/obama.jpg": "label_conflict", "sad/obama_again.jpg": "label_conflict"}
    assert "'happy', 'sad'" in rejected["sad/obama_again.jpg"]["detail"]
    assert list(rows(tmp_path / "w" / "manifest.csv")) == ["happy/cruise.jpg"]


def test_mode_change_redecides_without_rehashing(copies: Path, tmp_path: Path, cli) -> None:
    work = tmp_path / "w"
    assert cli("run", "--input", copies, "--out", work, "--stages", "dedup", "--workers", "1")[0] == 0
    parts = sorted((work / "manifests" / "dedup").glob("part-*.parquet"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts}
    code, _, err = cli("run", "--input", copies, "--out", work, "--stages", "dedup", "--workers", "1", "--dedup-mode", "exact")
    assert code == 0
    assert "re-deciding from stored results" in err and "recomputing" not in err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts} == before
    rejected = rows(work / "reports" / "rejected.csv")
    # Pixel-identical copies only: the exact copy still, the re-encoded and resized ones no more.
    assert list(rejected) == ["happy/b_copy.jpg"]
    assert {"happy/c_q40.jpg", "happy/d_half.jpg"} <= set(rows(work / "manifest.csv"))


def test_mirrored_copy_counts_only_with_flips(tmp_path: Path, shared: Path, cli) -> None:
    a = rgb(shared / "faces" / "presence" / "dl_tom_cruise.jpg")
    save(a, tmp_path / "in" / "happy" / "a.jpg")
    save(np.ascontiguousarray(a[:, ::-1]), tmp_path / "in" / "happy" / "b_mirrored.jpg")
    run = ("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "dedup", "--workers", "1")
    assert cli(*run)[0] == 0
    assert len(rows(tmp_path / "w" / "manifest.csv")) == 2
    assert cli(*run, "--dedup-flips")[0] == 0
    assert rows(tmp_path / "w" / "reports" / "rejected.csv")["happy/b_mirrored.jpg"]["reason"] == "duplicate"


def test_ten_percent_crop_found_through_the_window_hashes(shared: Path) -> None:
    a = rgb(shared / "faces" / "presence" / "fp_paul_rudd.jpg")
    a = cv2.resize(a, (a.shape[1] // 4, a.shape[0] // 4), interpolation=cv2.INTER_AREA)
    h, w = a.shape[:2]
    metrics = [hashes(a, (w, h)), hashes(np.ascontiguousarray(a[h // 10:, w // 10:]), (w, h))]
    assert hamming(metrics[0]["phash"], metrics[1]["phash"]) > 8  # the whole-image pHash alone misses it
    assert find_groups(metrics, DedupParams()).root.tolist() == [0, 0]
    assert find_groups(metrics, DedupParams(crops=False, verify=False)).root.tolist() == [0, 1]


def test_mirrored_hash_is_the_hash_of_the_mirrored_image(shared: Path) -> None:
    gray = np.asarray(Image.open(shared / "faces" / "presence" / "fr_obama1.jpg").convert("L").resize((256, 144)))
    main, mirrored = phash(gray)
    assert hamming(mirrored, phash(np.ascontiguousarray(gray[:, ::-1]))[0]) <= 2
    assert hamming(main, mirrored) > 10  # a real photo is not symmetric


def test_index_join_equals_brute_force_on_real_and_planted_codes(shared: Path) -> None:
    # Real hashes of FER2013 faces (clustered, many exact copies) plus planted near neighbours.
    import zipfile

    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[:1500]
        fer_bytes = [z.read(n) for n in names]
    hs = [phash(np.asarray(Image.open(io.BytesIO(b)).convert("L")))[0] for b in fer_bytes]
    rng = np.random.default_rng(0)
    codes = unhex(hs)
    planted = codes[rng.integers(0, len(codes), 500)].copy()
    bits = np.unpackbits(planted, axis=1)
    for row in bits:
        row[rng.choice(64, rng.integers(1, 12), replace=False)] ^= 1
    allc = np.vstack([codes, np.packbits(bits, axis=1)])
    mirrored = unhex([phash(np.asarray(Image.open(io.BytesIO(z2)).convert("L")))[1] for z2 in fer_bytes])
    words = allc.view(np.uint64).ravel()
    dist = np.bitwise_count(words[:, None] ^ words[None, :]).astype(np.int64)
    cross = np.bitwise_count(mirrored.view(np.uint64).ravel()[:, None] ^ words[None, :]).astype(np.int64)
    for radius in (0, 2, 4, 5, 6, 8, 9, 12, 16):
        (i, j, d), (qi, qj, qd) = near_pairs(allc, radius, [None, mirrored])
        want = {(a, b) for a, b in zip(*np.nonzero(np.triu(dist <= radius, 1)), strict=True)}
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == want, radius
        assert (d == dist[i, j]).all()
        want = set(zip(*np.nonzero(cross <= radius), strict=True))
        assert set(zip(qi.tolist(), qj.tolist(), strict=True)) == want, radius
        assert (qd == cross[qi, qj]).all()


def test_components_match_a_plain_union_find() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    assert components(n, a, b).tolist() == [find(x) for x in range(n)]


def test_bad_radius_is_a_usage_error(tmp_path: Path, copies: Path, cli) -> None:
    code, _, err = cli("run", "--input", copies, "--out", tmp_path / "w", "--stages", "dedup", "--dedup-radius", "40")
    assert code == 2 and "dedup.radius must be 0-16" in err
