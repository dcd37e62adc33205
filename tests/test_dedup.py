"""dedup: exact and near copies of real photos found, reframed copies proved by keypoints, distinct
photos kept apart, label conflicts, thresholds re-decided without re-hashing, the row's relation
fields, and the index join checked against brute force."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from manifests.store import Store
from stages import dupkeys, dupverify
from stages import phash as phash_module
from stages.dedup import DedupParams, hashes
from stages.dupgroups import find_groups, relation
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


def test_mirrored_copy_is_a_duplicate_unless_flips_are_off(tmp_path: Path, shared: Path, cli) -> None:
    a = rgb(shared / "faces" / "presence" / "dl_tom_cruise.jpg")
    save(a, tmp_path / "in" / "happy" / "a.jpg")
    save(np.ascontiguousarray(a[:, ::-1]), tmp_path / "in" / "happy" / "b_mirrored.jpg")
    run = ("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "dedup", "--workers", "1")
    assert cli(*run)[0] == 0
    row = rows(tmp_path / "w" / "reports" / "rejected.csv")["happy/b_mirrored.jpg"]
    assert row["reason"] == "duplicate" and "mirror" in row["detail"]
    assert cli(*run, "--no-dedup-flips")[0] == 0
    assert len(rows(tmp_path / "w" / "manifest.csv")) == 2


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


def test_index_join_equals_brute_force_on_real_and_planted_codes(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    # Bucket pairs compared a few pairs of hashes at a time (as a bucket of thousands of equal hashes is).
    monkeypatch.setattr(phash_module, "JOIN_CHUNK", 7)
    for radius in (0, 4, 10):
        (i, j, _), (qi, qj, _) = near_pairs(allc, radius, [None, mirrored])
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(a, b) for a, b in zip(*np.nonzero(np.triu(dist <= radius, 1)), strict=True)}
        assert set(zip(qi.tolist(), qj.tolist(), strict=True)) == set(zip(*np.nonzero(cross <= radius), strict=True))


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


def crop_area(a: np.ndarray, frac: float, aspect: float, centre: tuple[float, float]) -> np.ndarray:
    """A crop keeping *frac* of the area of *a*, *aspect* times wider than it, centred near *centre* (fractions)."""
    h, w = a.shape[:2]
    cw = min(w, round(np.sqrt(frac * w * h * aspect * w / h)))
    ch = min(h, round(frac * w * h / cw))
    x = int(np.clip(centre[0] * w - cw / 2, 0, w - cw))
    y = int(np.clip(centre[1] * h - ch / 2, 0, h - ch))
    return np.ascontiguousarray(a[y:y + ch, x:x + cw])


@pytest.fixture()
def reframed(tmp_path: Path, shared: Path) -> Path:
    """happy/: a news photo, a 40% crop of it at another aspect, a padded and captioned copy; two other photos of one person."""
    dev = shared / "faces" / "dev" / "images"
    a = rgb(dev / "fddb_000007.jpg")
    d = tmp_path / "in" / "happy"
    save(a, d / "a_photo.jpg")
    save(crop_area(a, 0.4, 1.4, (0.45, 0.4)), d / "b_crop40.jpg", quality=90)
    padded = cv2.copyMakeBorder(a, 60, 30, 40, 40, cv2.BORDER_CONSTANT, value=(250, 250, 250))
    cv2.putText(padded, "WHEN IT IS MONDAY", (50, 45), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    save(padded, d / "c_captioned.jpg", quality=85)
    for name in ("fr_obama.jpg", "fr_obama1.jpg"):
        shutil.copy(shared / "faces" / "presence" / name, d / name)
    return tmp_path / "in"


def test_reframed_copies_are_proved_by_keypoints_and_the_row_names_kept_key_kind_and_evidence(reframed: Path, tmp_path: Path, cli) -> None:
    work = tmp_path / "w"
    assert cli("run", "--input", reframed, "--out", work, "--stages", "dedup", "--workers", "1")[0] == 0
    rejected = rows(work / "reports" / "rejected.csv")
    assert set(rejected) == {"happy/a_photo.jpg", "happy/b_crop40.jpg"}
    # The padded copy has the most pixels: it stays, and the others name it.
    for key in rejected:
        assert rejected[key]["reason"] == "duplicate"
        assert rejected[key]["detail"].startswith("near duplicate of happy/c_captioned.jpg (distance ")
    # The keypoints are the rows' blobs, never text in the metrics every later dataset step holds.
    stored = list(Store(work).read_stage("dedup"))
    assert stored and all("orb" not in json.loads(r["metrics"]) and "blob" not in r for r in stored)
    assert {k for k, _ in Store(work).read_blobs("dedup")} == {r["key"] for r in stored}
    assert not list(work.glob(".dedup-keypoints-*"))  # the dataset step's memory-mapped bank is gone
    metrics = {r["key"]: json.loads(r["metrics"]) for r in Store(work).read_dataset("dedup")}
    for key in ("happy/a_photo.jpg", "happy/b_crop40.jpg"):
        m = metrics[key]
        assert m["dup_of"] == "happy/c_captioned.jpg" and m["dup_group"] == "happy/a_photo.jpg"
        assert m["dup_kind"] in ("resized", "reframed") and isinstance(m["dup_hamming"], int)
    crop = metrics["happy/b_crop40.jpg"]
    # The crop and the padded copy share less than the crop and the photo: the row says whose match proved it.
    assert crop.get("dup_via", "happy/c_captioned.jpg") in ("happy/a_photo.jpg", "happy/c_captioned.jpg")
    assert crop["dup_kind"] == "reframed" and crop["dup_inliers"] >= 8 and 0.1 <= crop["dup_overlap"] <= 1
    assert crop["dup_hamming"] > 16  # no pHash sees this crop: the keypoints found it
    # Two different photos of one person stay, in no group.
    kept = rows(work / "manifest.csv")
    assert kept["happy/fr_obama.jpg"]["dup_group"] == "" and kept["happy/fr_obama1.jpg"]["dup_group"] == ""
    # The verification thresholds only decide: raised, the crop is no longer proved, nothing is re-hashed.
    parts = sorted((work / "manifests" / "dedup").glob("part-*.parquet"))
    before = {p: p.read_bytes() for p in parts}
    code, _, err = cli("run", "--input", reframed, "--out", work, "--stages", "dedup", "--workers", "1", "--dedup-min-inliers", "90")
    assert code == 0 and "re-deciding from stored results" in err
    assert {p: p.read_bytes() for p in parts} == before
    assert "happy/b_crop40.jpg" in rows(work / "manifest.csv")


def test_verification_tells_the_same_photo_from_another_photo_of_the_same_person(shared: Path) -> None:
    pres = shared / "faces" / "presence"

    def feats(a: np.ndarray) -> dupkeys.Packed | None:
        return dupkeys.unpack(dupkeys.features(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)))

    a = rgb(pres / "fr_obama.jpg")
    a = cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)
    same = dupverify.verify(feats(a), feats(crop_area(a, 0.4, 0.7, (0.5, 0.35))))
    assert same.proves(8, 0.1) and 0.8 < same.scale < 1.25 and abs(same.rotation) < 3
    for other in ("fr_obama1.jpg", "fr_obama3.jpg"):
        b = rgb(pres / other)
        assert not dupverify.verify(feats(a), feats(b)).proves(8, 0.1), other


def test_fer_pixel_identical_faces_are_exact_duplicates(shared: Path) -> None:
    import zipfile

    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[:40]
        faces = [np.asarray(Image.open(io.BytesIO(z.read(n))).convert("L")) for n in names]
    faces += [faces[3], faces[3], faces[17]]  # three pixel-identical copies, as FER2013 has hundreds
    metrics = [hashes(f, (48, 48)) for f in faces]
    root = find_groups(metrics, DedupParams()).root.tolist()
    assert root[40] == root[41] == root[3] and root[42] == root[17]
    assert relation(metrics[40], metrics[3], None, DedupParams()) == {"dup_kind": "exact", "dup_hamming": 0}
    assert len(set(root)) == 40  # and nothing else of these 40 distinct faces merged


def test_through_crop_the_face_crops_and_the_frames_are_compared(reframed: Path, tmp_path: Path, cli) -> None:
    work = tmp_path / "w"
    assert cli("run", "--input", reframed, "--out", work, "--stages", "crop,dedup", "--workers", "1")[0] == 0
    rejected = {k: r for k, r in rows(work / "reports" / "rejected.csv").items() if r["stage"] == "dedup"}
    copies = {"happy/a_photo.jpg", "happy/b_crop40.jpg", "happy/c_captioned.jpg"}
    assert len(rejected) == 2 and set(rejected) < copies
    (kept_key,) = copies - set(rejected)
    assert all(r["reason"] == "duplicate" and kept_key in r["detail"] for r in rejected.values())
    # The copy kept is the one with the most source pixels on the face (no quality scores in this run).
    crop = {r["key"]: json.loads(r["metrics"]) for r in Store(work).read_stage("crop")}
    area = {k: crop[k]["box_w"] * crop[k]["box_h"] for k in copies}
    assert area[kept_key] == max(area.values())
    hashed = [json.loads(r["metrics"]) for r in Store(work).read_stage("dedup")]
    assert len(hashed) == 5 and all("img_phash" in m for m in hashed)  # the frame's hashes beside the face's
    # Two sets of keypoints as binary blobs beside the rows (each at most 96 of 34 B and a 10-byte head):
    # the face crop's, then the whole image's with the face box in its frame.
    blobs = dict(Store(work).read_blobs("dedup"))
    assert len(blobs) == 5
    for key, b in blobs.items():
        face, whole = dupkeys.unpack_all(b)
        assert 8 <= len(face.desc) <= 96 and 8 <= len(whole.desc) <= 96 and len(b) == 2 * 10 + 34 * (len(face.desc) + len(whole.desc))
        assert face.box is None and whole.box is not None and max(whole.size) <= dupkeys.SIDE
        x0, y0, x1, y1 = whole.box
        assert 0 <= x0 < x1 <= whole.size[0] and 0 <= y0 < y1 <= whole.size[1], (key, whole.box)
    metrics = {r["key"]: json.loads(r["metrics"]) for r in Store(work).read_dataset("dedup")}
    assert metrics["happy/b_crop40.jpg"]["dup_kind"] in ("resized", "reframed")
    kept = rows(work / "manifest.csv")
    assert kept["happy/fr_obama.jpg"]["dup_group"] == "" and kept["happy/fr_obama1.jpg"]["dup_group"] == ""


def test_window_hashes_are_of_windows_not_the_whole_image() -> None:
    # The window fraction once shared its name with a module constant that later shadowed it, making
    # every "window" the whole image: the five windows must be 90% of each side, at the centre and corners.
    from stages.dedup import windows

    img = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    got = windows(img)
    assert [w.shape for w in got] == [(90, 72)] * 5
    assert got[1][0, 0] == img[0, 0] and got[4][-1, -1] == img[-1, -1] and got[0][0, 0] == img[5, 4]




def test_verification_in_processes_decides_as_threads_do(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A large decision on the dataset step's mapped bank is verified by processes mapping the bank
    themselves (the candidates, and each duplicate's relation to the kept image); it gives the rows the
    threads give on a bank in memory."""
    from stages import dupprocs
    from stages.base import Context, Item
    from stages.dedup import Dedup
    from stages.images import Decoded

    records = []
    for name in sorted((shared / "faces" / "dev" / "images").glob("fddb_*.jpg"))[:6]:
        a = rgb(name)
        wide = crop_area(a, 0.6, 1.3, (0.5, 0.45))
        for k, c in enumerate((a, crop_area(a, 0.4, 1.4, (0.45, 0.4)), wide, crop_area(wide, 0.5, 0.8, (0.5, 0.5)), a[:, ::-1])):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(c)).save(buf, "PNG")
            item = Item(f"happy/{name.stem}_{k}.png", "", "")
            o = Dedup().process(item, Decoded.from_bytes(buf.getvalue()), Context(tmp_path))
            records.append({"key": item.key, "label": "happy", "metrics": {**o.metrics, "orb": o.blob}})
    p, stage = DedupParams(), Dedup()
    memory = dupkeys.Bank.of([r["metrics"]["orb"] for r in records])  # in memory: threads
    (tmp_path / "bank").mkdir()
    mapped = dupkeys.Bank(len(records), tmp_path / "bank")  # mapped, as the dataset step's
    for i, r in enumerate(records):
        mapped.put(i, r["metrics"]["orb"])
    threads = find_groups([r["metrics"] for r in records], p, memory)
    rows = [(o.key, o.status, o.reason, o.detail, o.metrics) for o in stage.decide(records, p, memory)]
    monkeypatch.setattr(dupprocs, "cores", lambda: 2)  # two processes, even on a one-core machine
    monkeypatch.setattr(dupprocs, "PROCESS_PAIRS", 1)
    monkeypatch.setattr(dupprocs, "PROCESS_CHUNK", 5)
    procs = find_groups([r["metrics"] for r in records], p, mapped)
    assert threads.verified > 5 and threads.proved > 0
    assert (procs.verified, procs.proved) == (threads.verified, threads.proved)
    assert procs.edges == threads.edges and procs.root.tolist() == threads.root.tolist()
    members: dict[int, list[int]] = {}
    for i, g in enumerate(procs.root.tolist()):
        members.setdefault(g, []).append(i)
    seen = stage.verified_to_kept(records, members, procs.edges, p, mapped)
    assert seen and any(ev.matches for ev in seen.values())  # duplicates joined through others, verified in processes
    assert [(o.key, o.status, o.reason, o.detail, o.metrics) for o in stage.decide(records, p, mapped)] == rows
    # Processes that cannot start (here: the bank's files are gone; this process keeps its map) leave
    # the work to threads and this process, with a warning, and the same rows.
    for f in (tmp_path / "bank").iterdir():
        f.unlink()
    with caplog.at_level("WARNING", logger="stages.dupprocs"):
        assert [(o.key, o.status, o.reason, o.detail, o.metrics) for o in stage.decide(records, p, mapped)] == rows
    assert "verification processes failed" in caplog.text
