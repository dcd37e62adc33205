"""Dataset layouts: folder, AIHub (real annotation samples), FER2013 CSV and folders, zip input."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import corpus
import numpy as np
import pytest

from pipeline.sources import SourceOptions, detect, ingest, nothing_kept, read_item
from pipeline.sources.tree import walk
from stages.images import Decoded


def small_jpeg() -> bytes:
    return corpus.jpeg(corpus.reference(40, 30), quality=80)


def test_folder_labels_aliases_and_label_list(tmp_path: Path) -> None:
    for folder in ("기쁨", "sad", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jpg").write_bytes(small_jpeg())
    (tmp_path / "loose.jpg").write_bytes(small_jpeg())
    (tmp_path / "notes.txt").write_text("not an image")
    opts = SourceOptions(aliases=(("기쁨", "happy"),), labels=("happy", "sad"))
    got = ingest(tmp_path, opts)
    assert got.layout == "folder" and "picked 'folder'" in got.notes[0]
    assert [(i.key, i.label) for i in got.items] == [("sad/a.jpg", "sad"), ("기쁨/a.jpg", "happy")]
    refused = {i.key: (reason, detail) for i, reason, detail in got.rejected}
    assert refused["other/a.jpg"] == ("unlabeled", "label 'other' is not in the label list")
    assert refused["loose.jpg"][0] == "unlabeled"
    assert any("ignored 1 non-image" in n for n in got.notes)
    assert nothing_kept(got) == ""


def test_an_input_with_every_image_refused_says_what_the_layout_expected(tmp_path: Path) -> None:
    """A flat folder of photos (no class folders): a warning with the counts and the layout's rule,
    not a run that quietly keeps nothing."""
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(small_jpeg())
    got = ingest(tmp_path, SourceOptions(layout="folder"))
    assert not got.items
    warning = nothing_kept(got)
    assert warning.startswith("ingest refused every image (2 unlabeled): nothing to process; ")
    assert "first-level folder (RAW/happy/*.jpg)" in warning
    item = got.rejected[0][0]
    got.rejected.append((item, "unsafe_path", "../c.jpg"))   # two reasons: the counts, no single rule to name
    assert nothing_kept(got) == "ingest refused every image (2 unlabeled, 1 unsafe_path): nothing to process"


def test_nfd_names_become_nfc_keys(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "기쁨")
    (tmp_path / nfd).mkdir()
    (tmp_path / nfd / f"{nfd} 1.jpg").write_bytes(small_jpeg())
    got = ingest(tmp_path, SourceOptions())
    assert [i.key for i in got.items] == ["기쁨/기쁨 1.jpg"]
    assert got.items[0].label == "기쁨"
    assert Decoded(lambda: read_item(got.items[0])).full().shape == (30, 40, 3)


def test_zip_with_cp949_names_is_read_in_place(tmp_path: Path) -> None:
    z = tmp_path / "[원천]사진.zip"
    corpus.zip_cp949(z, {"기쁨/웃는 얼굴.jpg": small_jpeg(), "슬픔/우는 얼굴.jpg": small_jpeg()})
    import zipfile

    assert all(not (i.flag_bits & 0x800) for i in zipfile.ZipFile(z).infolist())  # really no UTF-8 flag
    got = ingest(z, SourceOptions(layout="folder"))
    assert [(i.key, i.label) for i in got.items] == [("기쁨/웃는 얼굴.jpg", "기쁨"), ("슬픔/우는 얼굴.jpg", "슬픔")]
    assert Decoded(lambda: read_item(got.items[0])).full().shape == (30, 40, 3)
    assert not any(p.suffix == ".jpg" for p in tmp_path.rglob("*"))  # nothing extracted


def test_zip_members_escaping_the_archive_are_refused_as_rows(tmp_path: Path) -> None:
    corpus.zip_slip(tmp_path / "in.zip", small_jpeg())
    got = ingest(tmp_path / "in.zip", SourceOptions(layout="folder"))
    assert [i.key for i in got.items] == ["happy/ok.jpg"]
    assert sorted(r for _, r, _ in got.rejected) == ["unsafe_path"] * 3
    assert not (tmp_path.parent / "evil.jpg").exists()


def aihub_tree(root: Path, shared: Path, n: int = 6, zipped: bool = False) -> list[dict]:
    """AIHub folders with real annotation records; images for all but the last record."""
    recs = json.loads((shared / "aihub_json/기쁨/img_emotion_sample_data(기쁨).json").read_text())
    # records with a 2-of-3 majority and one without, taken from the real sample
    def votes(r: dict) -> list[str]:
        return [r[f"annot_{a}"]["faceExp"] for a in "ABC"]

    majority = [r for r in recs if len(set(votes(r))) < 3][: n - 1]
    split3 = [r for r in recs if len(set(votes(r))) == 3][:1]
    chosen = majority + split3
    img_dir = root / "[원천]EMOIMG_기쁨_TRAIN_01"
    lbl_dir = root / "[라벨]EMOIMG_기쁨_TRAIN"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for r in chosen[:-1] + split3:
        (img_dir / r["filename"]).write_bytes(small_jpeg())
    (img_dir / "ffff_남_20_기쁨_unlabeled_20201208115710-001-021.jpg").write_bytes(small_jpeg())
    missing = dict(chosen[-2], filename="0000_여_30_기쁨_nowhere_20201208-001-001.jpg")
    (lbl_dir / "img_emotion_training_data(기쁨).json").write_text(json.dumps([*chosen, missing], ensure_ascii=False))
    if zipped:
        for d in (img_dir, lbl_dir):
            corpus.zip_cp949(d.with_suffix(".zip"), {p.name: p.read_bytes() for p in d.iterdir()})
            shutil.rmtree(d)
    return chosen


@pytest.mark.parametrize("zipped", [False, True], ids=["folders", "zip-parts"])
def test_aihub_layout_with_real_records(tmp_path: Path, shared: Path, zipped: bool) -> None:
    chosen = aihub_tree(tmp_path, shared, zipped=zipped)
    got = ingest(tmp_path, SourceOptions())
    assert got.layout == "aihub"
    by_name = {i.key.rsplit("/", 1)[-1]: i for i in got.items}
    refused = {i.key.rsplit("/", 1)[-1]: (r, d) for i, r, d in got.rejected}
    first = chosen[0]
    item = by_name[first["filename"]]
    assert item.group == first["filename"].split("_")[0]
    assert item.meta["gender"] == first["gender"] and item.meta["source_split"] == "train"
    box = first["annot_A"]["boxes"]
    assert item.meta["annot_A_box"] == pytest.approx([box["minX"], box["minY"], box["maxX"] - box["minX"], box["maxY"] - box["minY"]], abs=0.01)
    # majority policy: English canonical names by default
    assert all(i.label in {"happy", "embarrassed", "angry", "anxious", "hurt", "sad", "neutral"} for i in got.items)
    assert refused[chosen[-1]["filename"]][0] == "annotator_disagreement"
    assert refused["ffff_남_20_기쁨_unlabeled_20201208115710-001-021.jpg"][0] == "unlabeled"
    assert got.missing == ["0000_여_30_기쁨_nowhere_20201208-001-001.jpg"]
    assert Decoded(lambda: read_item(item)).full().shape == (30, 40, 3)


def test_aihub_label_policies(tmp_path: Path, shared: Path) -> None:
    chosen = aihub_tree(tmp_path, shared)
    uploader = ingest(tmp_path, SourceOptions(label_policy="uploader"))
    unanimous = ingest(tmp_path, SourceOptions(label_policy="unanimous"))
    # uploader policy keeps the no-majority record, labelled with the uploader's emotion
    assert chosen[-1]["filename"] in {i.key.rsplit("/", 1)[-1] for i in uploader.items}
    assert all(i.label == "happy" for i in uploader.items)
    n_unanimous = sum(len({r[f"annot_{a}"]["faceExp"] for a in "ABC"}) == 1 for r in chosen[:-1])
    assert len(unanimous.items) == n_unanimous
    assert len(unanimous.items) < len(uploader.items)


def test_fer2013_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for emo, usage in ((3, "Training"), (0, "PublicTest"), (6, "PrivateTest"), (9, "Training")):
        lines.append(f"{emo},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}")
    lines.append("4,1 2 3,Training")
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    got = ingest(tmp_path, SourceOptions())
    assert got.layout == "fer2013"
    assert [(i.key, i.label, i.meta["source_split"]) for i in got.items] == [
        ("fer2013/00000", "happy", "train"), ("fer2013/00001", "angry", "val"), ("fer2013/00002", "neutral", "test")]
    assert Decoded(lambda: read_item(got.items[0])).full().shape == (48, 48)
    assert sorted(r for _, r, _ in got.rejected) == ["decode_error", "unlabeled"]


def test_fer2013_folders_from_the_real_zip(shared: Path) -> None:
    entries = list(walk(shared / "fer2013/train.zip"))
    assert detect(entries)[0] == "fer2013"
    got = ingest(shared / "fer2013/train.zip", SourceOptions())
    assert len(got.items) == 28709 and not got.rejected
    assert {i.label for i in got.items} == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    assert Decoded(lambda: read_item(got.items[-1])).full().shape == (48, 48)
