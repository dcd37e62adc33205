"""split: leak-free stratified assignment, the source's own split, determinism, and the dataset/ tree."""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from manifests.keys import split_key
from stages.split import Split, SplitParams, assign

LABELS = ("angry", "happy", "neutral", "sad", "surprise", "fear", "disgust")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def realistic(n: int = 10_000, seed: int = 1) -> list[dict[str, Any]]:
    """AIHub-like records: persons with 1-120 photos of their own emotion mix, 4% in dup pairs."""
    rng = random.Random(seed)
    recs: list[dict[str, Any]] = []
    person = 0
    while len(recs) < n:
        size = min(int(rng.lognormvariate(3.0, 0.8)) + 1, 120, n - len(recs))
        weights = [rng.random() + 0.3 for _ in LABELS]
        weights[-1] *= 0.2  # a rare class, as disgust is in FER2013
        pid = f"{person:06x}"
        for j in range(size):
            lab = rng.choices(LABELS, weights)[0]
            recs.append({"key": f"{lab}/{pid}_{j:03d}.jpg", "label": lab, "group": pid, "meta": {}, "metrics": {}})
        person += 1
    pairs = list(range(len(recs)))
    rng.shuffle(pairs)
    for g in range(len(recs) // 50):  # dup pairs, mostly across two persons: they join the persons
        for i in pairs[2 * g : 2 * g + 2]:
            recs[i]["metrics"]["dup_group"] = f"d{g}"
    return sorted(recs, key=lambda r: r["key"])


def leaks(recs: list[dict[str, Any]], splits: list[str], field: str) -> int:
    seen: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(recs, splits, strict=True):
        v = r["group"] if field == "group" else r["metrics"].get("dup_group")
        if v:
            seen[v].add(s)
    return sum(len(v) > 1 for v in seen.values())


def test_realistic_10k_no_person_or_dup_group_leaks_and_labels_within_two_points() -> None:
    recs = realistic()
    p = SplitParams()
    splits = assign(recs, p)
    assert leaks(recs, splits, "group") == 0
    assert leaks(recs, splits, "dup") == 0
    totals = Counter(r["label"] for r in recs)
    cells = Counter((r["label"], s) for r, s in zip(recs, splits, strict=True))
    for lab, n in totals.items():
        for s, ratio in zip(("train", "val", "test"), p.ratios, strict=True):
            assert abs(cells[lab, s] / n - ratio) <= 0.02, (lab, s, cells[lab, s], n)


def test_seed_decides_and_input_order_does_not() -> None:
    recs = realistic(3000)
    a = assign(recs, SplitParams(seed=7))
    shuffled = recs[:]
    random.Random(0).shuffle(shuffled)
    outs = {o.key: o.metrics["split"] for o in Split(SplitParams(seed=7)).run(shuffled, Path("."))}
    assert [outs[r["key"]] for r in recs] == a
    assert assign(recs, SplitParams(seed=8)) != a


def test_two_parts_and_group_regex() -> None:
    recs = [{"key": f"{lab}/subj{p:02d}-{j}.png", "label": lab, "group": "", "meta": {}, "metrics": {}}
            for p in range(40) for lab in ("happy", "sad") for j in range(3)]
    p = SplitParams(ratios=(0.75, 0.25), group_regex=r"/(subj\d+)-")
    splits = assign(sorted(recs, key=lambda r: r["key"]), p)
    assert set(splits) == {"train", "val"}
    by_subject: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(sorted(recs, key=lambda r: r["key"]), splits, strict=True):
        by_subject[r["key"].split("/")[1].split("-")[0]].add(s)
    assert all(len(v) == 1 for v in by_subject.values())
    assert Counter(splits)["val"] == 60  # 10 of 40 subjects, 6 images each


def test_faces_of_one_photo_stay_together_without_a_person_id() -> None:
    recs = [{"key": f"happy/img{i:03d}.jpg#{f}", "label": "happy", "group": "", "meta": {}, "metrics": {}}
            for i in range(100) for f in range(3)]
    splits = assign(recs, SplitParams())
    photo: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(recs, splits, strict=True):
        photo[split_key(r["key"])[0]].add(s)
    assert all(len(v) == 1 for v in photo.values())


def test_keep_source_split_with_fallback_for_items_without_one() -> None:
    recs = []
    for i in range(600):
        src = "train" if i < 300 else "val" if i < 400 else None
        recs.append({"key": f"k{i:04d}.jpg", "label": LABELS[i % 3], "group": "", "metrics": {},
                     "meta": {"source_split": src} if src else {}})
    # A duplicate pair across the source's train and val must still end in one split.
    recs[10]["metrics"]["dup_group"] = recs[350]["metrics"]["dup_group"] = "x"
    splits = assign(recs, SplitParams(keep_source=True))
    assert splits[10] == splits[350] != "val"  # a tie: the source's train wins
    assert all(splits[i] == "val" for i in range(300, 400) if i != 350)
    # The source has no test: it is carved from the source's train, 1 part in 9 (0.1 / (0.8 + 0.1)).
    from_train = Counter(splits[i] for i in [*range(300), 350])
    assert set(from_train) == {"train", "test"} and from_train["test"] == pytest.approx(301 / 9, abs=3)
    assert all(s in ("train", "val", "test") for s in splits[400:])


def test_keep_source_fer2013_folders_keep_test_and_carve_val_from_train() -> None:
    recs = [{"key": f"{sp}/{lab}/{i:04d}.jpg", "label": lab, "group": "", "metrics": {}, "meta": {"source_split": sp}}
            for sp, n in (("train", 900), ("test", 100)) for lab in ("happy", "sad") for i in range(n)]
    splits = assign(recs, SplitParams(keep_source=True))
    got = Counter((r["meta"]["source_split"], s) for r, s in zip(recs, splits, strict=True))
    assert got[("test", "test")] == 200 and got[("train", "test")] == 0
    assert got[("train", "val")] == 200 and got[("train", "train")] == 1600


@pytest.mark.parametrize("ratios", [(0.8, 0.3), (0.5, 0.3, 0.1, 0.1), (1.0,), (0.9, 0.0, 0.1)])
def test_bad_ratios_are_refused(ratios) -> None:
    with pytest.raises(ValueError, match=r"split\.ratios"):
        SplitParams(ratios=ratios)


def test_bad_ratio_on_the_command_line_is_one_line_and_exit_2(tmp_path, cli) -> None:
    (tmp_path / "in").mkdir()
    code, _, err = cli("run", "-i", tmp_path / "in", "-o", tmp_path / "w", "--stages", "split", "--split-ratios", "0.7,0.2")
    assert code == 2 and "split.ratios must sum to 1" in err
    code, _, err = cli("run", "-i", tmp_path / "in", "-o", tmp_path / "w", "--stages", "split", "--split-group-regex", "[a-z]+")
    assert code == 2 and "capture group" in err


# -- through the CLI, on real FER2013 faces ------------------------------------------------------
@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """48 real faces in 3 class folders, named <person>_<n>.jpg: 12 persons with 4 photos each."""
    root = tmp_path_factory.mktemp("faces") / "in"
    with zipfile.ZipFile(shared / "fer2013/train.zip") as z:
        for lab in ("happy", "sad", "surprise"):
            names = sorted(n for n in z.namelist() if n.startswith(f"train/{lab}/") and n.endswith(".jpg"))[:16]
            (root / lab).mkdir(parents=True)
            for i, n in enumerate(names):
                (root / lab / f"p{i % 12:02d}_{lab}_{i}.jpg").write_bytes(z.read(n))
    return root


def run(cli, faces: Path, work: Path, *extra: str) -> list[dict[str, str]]:
    code, _, err = cli("run", "-i", faces, "-o", work, "--stages", "compress,split", "--shard-size", "8",
                       "--split-group-regex", r"/(p\d+)_", *extra)
    assert code == 0, err
    return read_csv(work / "manifest.csv")


def tree(work: Path) -> dict[str, Path]:
    """The image files of the dataset/ tree (dataset/classes.txt aside)."""
    root = work / "dataset"
    return {str(p.relative_to(root)): p for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and p.parent != root}


def test_a_class_missing_from_a_split_is_warned_and_still_has_its_folder_in_every_split(faces, tmp_path, cli, shared) -> None:
    src = tmp_path / "in"
    shutil.copytree(faces, src)
    (src / "fear").mkdir()
    with zipfile.ZipFile(shared / "fer2013/train.zip") as z:  # one person: the class cannot reach val or test
        for i, n in enumerate(sorted(n for n in z.namelist() if n.startswith("train/fear/") and n.endswith(".jpg"))[:2]):
            (src / "fear" / f"p99_fear_{i}.jpg").write_bytes(z.read(n))
    (src / "notes.txt").write_text("not an image")
    (src / "sad" / "Thumbs.db").write_bytes(b"\0" * 10)
    work = tmp_path / "w"
    code, out, err = cli("run", "-i", src, "-o", work, "--stages", "compress,split", "--workers", "1", "--shard-size", "8",
                         "--split-group-regex", r"/(p\d+)_")
    assert code == 0, err
    rows = read_csv(work / "manifest.csv")
    fear = {r["split"] for r in rows if r["label"] == "fear"}
    assert len(fear) == 1
    missing = [s for s in ("val", "test") if s not in fear]
    assert f"W split: class 'fear' has no {' or '.join(missing)} image" in err
    classes = (work / "dataset/classes.txt").read_text(encoding="utf-8").splitlines()
    assert classes == ["fear", "happy", "sad", "surprise"]
    for split in ("train", "val", "test"):  # Keras and torchvision number classes by these sorted folders
        assert sorted(p.name for p in (work / "dataset" / split).iterdir() if p.is_dir()) == classes
    for s in missing:
        assert not list((work / "dataset" / s / "fear").iterdir())
    assert "class fear has no " + " or ".join(missing) + " image" in (work / "reports/index.html").read_text(encoding="utf-8")
    # Files that are not images are named, not just counted.
    assert read_csv(work / "reports/ignored.csv") == [{"file": "notes.txt"}, {"file": "sad/Thumbs.db"}]
    assert "2 file(s) that are not images ignored: reports/ignored.csv" in out
    # A class that leaves the data leaves the tree: no stale empty folder, classes.txt follows.
    shutil.rmtree(src / "fear")
    (src / "notes.txt").unlink()
    (src / "sad" / "Thumbs.db").unlink()
    code, out, err = cli("run", "-i", src, "-o", work, "--stages", "compress,split", "--workers", "1", "--shard-size", "8",
                         "--split-group-regex", r"/(p\d+)_")
    assert code == 0, err
    assert (work / "dataset/classes.txt").read_text(encoding="utf-8").splitlines() == ["happy", "sad", "surprise"]
    assert not any((work / "dataset" / s / "fear").exists() for s in ("train", "val", "test"))
    assert read_csv(work / "reports/ignored.csv") == [] and "not images" not in out


def test_manifest_split_is_the_same_with_one_and_two_workers_and_persons_do_not_leak(faces, tmp_path, cli) -> None:
    one = run(cli, faces, tmp_path / "w1", "--workers", "1")
    two = run(cli, faces, tmp_path / "w2", "--workers", "2")
    assert [(r["key"], r["split"]) for r in one] == [(r["key"], r["split"]) for r in two]
    assert (tmp_path / "w1/manifest.csv").read_bytes() == (tmp_path / "w2/manifest.csv").read_bytes()
    person: dict[str, set[str]] = defaultdict(set)
    for r in one:
        person[r["key"].split("/")[1].split("_")[0]].add(r["split"])
    assert len(person) == 12 and all(len(v) == 1 for v in person.values())
    assert {r["split"] for r in one} == {"train", "val", "test"}


def test_dataset_tree_is_hardlinked_and_follows_a_new_seed(faces, tmp_path, cli) -> None:
    work = tmp_path / "w"
    rows = run(cli, faces, work, "--workers", "1")
    files = tree(work)
    assert sorted(files) == sorted(f"{r['split']}/{r['label']}/{Path(r['file']).name}" for r in rows)
    for r in rows:
        dst = files[f"{r['split']}/{r['label']}/{Path(r['file']).name}"]
        assert os.path.samefile(dst, work / r["file"]) and not dst.is_symlink()
    before = {r["key"]: r["split"] for r in rows}
    rows = run(cli, faces, work, "--workers", "1", "--split-seed", "5")
    assert {r["key"]: r["split"] for r in rows} != before
    assert sorted(tree(work)) == sorted(f"{r['split']}/{r['label']}/{Path(r['file']).name}" for r in rows)  # no stale files


def test_symlink_option(faces, tmp_path, cli) -> None:
    work = tmp_path / "w"
    rows = run(cli, faces, work, "--workers", "1", "--split-link", "symlink")
    files = tree(work)
    assert len(files) == len(rows)
    for r in rows:
        dst = files[f"{r['split']}/{r['label']}/{Path(r['file']).name}"]
        assert dst.is_symlink() and dst.resolve() == (work / r["file"]).resolve()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second file system (/dev/shm)")
def test_hardlinks_fall_back_to_copies_across_file_systems(faces, cli) -> None:
    work = Path(tempfile.mkdtemp(dir="/dev/shm")) / "w"
    try:
        if os.stat(work.parent).st_dev == os.stat(faces).st_dev:
            pytest.skip("/dev/shm is on the same file system here")
        code, _, err = cli("run", "-i", faces, "-o", work, "--stages", "split", "--workers", "1")  # file = the source
        assert code == 0, err
        rows = read_csv(work / "manifest.csv")
        files = tree(work)
        assert len(files) == len(rows) == 48
        for r in rows:
            dst = files[f"{r['split']}/{r['label']}/{Path(r['file']).name}"]
            assert dst.read_bytes() == Path(r["file"]).read_bytes() and not dst.is_symlink()
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


@pytest.mark.slow
def test_keras_loads_the_exported_tree(faces, tmp_path, cli) -> None:
    work = tmp_path / "w"
    rows = run(cli, faces, work, "--workers", "2")
    import tensorflow as tf

    ds = tf.keras.utils.image_dataset_from_directory(work / "dataset/train", image_size=(48, 48), batch_size=8, shuffle=False)
    train = [r for r in rows if r["split"] == "train"]
    assert ds.class_names == sorted({r["label"] for r in train}) == (work / "dataset/classes.txt").read_text().split()
    n = 0
    for images, labels in ds:
        assert images.shape[1:] == (48, 48, 3)
        n += int(labels.shape[0])
    assert n == len(train)


def test_zip_members_are_written_into_the_tree(faces, tmp_path, cli) -> None:
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(faces.rglob("*.jpg")):
            z.write(p, p.relative_to(faces).as_posix())
    work = tmp_path / "w"
    code, _, err = cli("run", "-i", archive, "-o", work, "--stages", "split", "--workers", "1")  # no file of its own
    assert code == 0, err
    rows = read_csv(work / "manifest.csv")
    files = tree(work)
    assert len(rows) == len(files) == 48
    for r in rows:
        dst = files[f"{r['split']}/{r['label']}/{r['key'].split('/')[-1]}"]
        assert dst.read_bytes() == (faces / r["key"]).read_bytes()


def test_split_alone_after_the_input_changed_runs_the_workspace_stages_again_instead_of_dropping_them(faces, tmp_path,
                                                                                                      cli) -> None:
    src = tmp_path / "in"
    shutil.copytree(faces, src)
    work = tmp_path / "w"
    rows = run(cli, src, work, "--workers", "1")
    assert all(r["file"].startswith("images/") for r in rows)  # compress's output, not the source
    new = src / "happy" / "p00_happy_new.jpg"
    shutil.copy(src / "sad" / sorted(p.name for p in (src / "sad").iterdir())[0], new)
    code, _, err = cli("run", "-i", src, "-o", work, "--stages", "split", "--workers", "1", "--shard-size", "8",
                       "--split-group-regex", r"/(p\d+)_")
    assert code == 0, err
    assert "building on this workspace's earlier stages compress" in err and "the input changed" in err
    after = {r["key"]: r for r in read_csv(work / "manifest.csv")}
    assert set(after) == {r["key"] for r in rows} | {"happy/p00_happy_new.jpg"}
    assert all(r["file"].startswith("images/") and (work / r["file"]).is_file() for r in after.values())
