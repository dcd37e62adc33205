"""quality: black, blank, flat, dark and blurred images rejected with the right reasons, real photos
kept; thresholds (absolute, percentile, median-relative) re-decided without re-scoring; pose from
real MTCNN landmarks; detail reads the size an enlarged image came from."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.quality import QualityParams, detail, detail_px, face_detail, parse_threshold, scores, yaw_from_landmarks

REAL = ("fr_obama.jpg", "dl_tom_cruise.jpg", "fp_kate_siegel.jpg", "fr_obama1.jpg", "sk_astronaut.png", "mt_ivan.jpg")


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["key"]: r for r in csv.DictReader(f)}


@pytest.fixture()
def folder(tmp_path: Path, shared: Path) -> Path:
    """happy/: six real photos, and black, blank (white), flat gray, dark and blurred images."""
    src = shared / "faces" / "presence"
    d = tmp_path / "in" / "happy"
    d.mkdir(parents=True)
    for name in REAL:
        shutil.copy(src / name, d / name)
    obama = np.asarray(Image.open(src / "fr_obama.jpg").convert("RGB"))
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(d / "black.png")
    Image.fromarray(np.full((300, 300, 3), 255, np.uint8)).save(d / "blank.png")
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(d / "flat_gray.png")
    Image.fromarray((obama * 0.12).astype(np.uint8)).save(d / "dark_obama.jpg", quality=95)
    Image.fromarray(cv2.GaussianBlur(obama, (0, 0), 20)).save(d / "blurred_obama.jpg", quality=95)
    return tmp_path / "in"


def test_bad_images_rejected_with_the_right_reason_real_photos_kept(folder: Path, tmp_path: Path, cli) -> None:
    code, out, _ = cli("run", "--input", folder, "--out", tmp_path / "w", "--stages", "quality", "--workers", "1")
    assert code == 0, out
    rejected = rows(tmp_path / "w" / "reports" / "rejected.csv")
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "happy/black.png": "too_dark",
        "happy/blank.png": "too_bright",
        "happy/flat_gray.png": "low_contrast",
        "happy/dark_obama.jpg": "too_dark",
        "happy/blurred_obama.jpg": "blurry",
    }
    # The detail names every failed check, the reason first.
    assert rejected["happy/black.png"]["detail"].startswith("too_dark: brightest 5% at 0 < 40; low_contrast")
    kept = rows(tmp_path / "w" / "manifest.csv")
    assert sorted(kept) == sorted(f"happy/{n}" for n in REAL)
    assert float(kept["happy/fr_obama.jpg"]["sharpness"]) > 1000
    assert kept["happy/fr_obama.jpg"]["face_px"] == "910"  # no crop: the image is taken as the face


def test_threshold_change_redecides_without_rescoring(folder: Path, tmp_path: Path, cli) -> None:
    work = tmp_path / "w"
    run = ("run", "--input", folder, "--out", work, "--stages", "quality,dedup", "--workers", "1")
    assert cli(*run)[0] == 0
    parts = sorted((work / "manifests").glob("*/part-*.parquet"))
    assert {p.parent.name for p in parts} == {"quality", "dedup"}
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts}
    decided = (work / "manifests" / "quality" / "dataset.parquet").read_bytes()
    code, _, err = cli(*run, "--quality-min-contrast", "p50")
    assert code == 0
    assert "re-deciding from stored results" in err and "recomputing" not in err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts} == before
    assert (work / "manifests" / "quality" / "dataset.parquet").read_bytes() != decided
    # Half the images (11) have less contrast than the median: the 5 bad ones and the 0-1 flattest photos.
    low = [k for k, r in rows(work / "reports" / "rejected.csv").items() if r["reason"] == "low_contrast"]
    assert "happy/flat_gray.png" in low
    assert 5 <= len(rows(work / "reports" / "rejected.csv")) <= 6


def test_threshold_syntax() -> None:
    assert parse_threshold("x", "12.5") == ("abs", 12.5)
    assert parse_threshold("x", "p5") == ("pct", 5.0)
    assert parse_threshold("x", "m0.1") == ("median", 0.1)
    assert parse_threshold("x", "off") is None
    for bad in ("p101", "abc", "m-1", "nan"):
        with pytest.raises(ValueError, match="x must be a number"):
            parse_threshold("x", bad)
    with pytest.raises(ValueError, match=r"quality\.max_yaw"):
        QualityParams(max_yaw="sideways")


def test_bad_threshold_is_a_usage_error(folder: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("run", "--input", folder, "--out", tmp_path / "w", "--stages", "quality", "--quality-min-contrast", "lots")
    assert code == 2 and "quality.min_contrast must be" in err


def test_scores_of_real_fer_faces_and_synthetic_extremes(shared: Path) -> None:
    import zipfile

    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        face = np.asarray(Image.open(z.open("train/happy/Training_62256585.jpg")).convert("L"))
    s = scores(face)
    assert s["chroma"] == 0 and 4 < s["entropy"] < 8 and s["contrast"] > 8 and s["sharpness"] > 0
    # Scale-free: sharpness is measured with the longer side at 128 px at most.
    big = cv2.resize(face, (480, 480), interpolation=cv2.INTER_NEAREST)
    assert scores(big)["brightness"] == pytest.approx(s["brightness"], abs=1)
    black = scores(np.zeros((64, 64, 3), np.uint8))
    assert black["bright_p95"] == 0 and black["contrast"] == 0 and black["entropy"] == 0


def enlarge(a: np.ndarray, side: int) -> np.ndarray:
    """*a* shrunk to *side* px on its shorter side and enlarged back to its own size (bilinear)."""
    h, w = a.shape[:2]
    s = side / min(h, w)
    small = cv2.resize(a, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def obama_face(shared: Path, side: int) -> np.ndarray:
    """The face of fr_obama.jpg (a real photo), gray, *side* px square."""
    gray = np.asarray(Image.open(shared / "faces" / "presence" / "fr_obama.jpg").convert("L"))
    h, w = gray.shape
    cut = gray[h // 8: h // 8 + w * 3 // 4, w // 8: w * 7 // 8]
    return cv2.resize(cut, (side, side), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("side", [48, 96, 256])  # 256: measured at 128 px
def test_detail_reads_the_size_an_image_was_enlarged_from(shared: Path, side: int) -> None:
    face = obama_face(shared, side)
    assert face_detail(face, side) >= side * 2 // 3  # a sharp face resolves (nearly) all of it
    for small in (12, 16, 24):
        got = face_detail(enlarge(face, small), side)
        assert small * 0.75 <= got <= small * 1.5, (side, small, got)
    assert detail(np.full((48, 48), 128, np.float32)) == 1.0  # flat: nothing to measure, never rejected for it
    # A view enlarged from a small face resolves at most the face; one shrunk from a large face stands for all of it.
    assert detail_px(1.0, (224, 224), 30) == 30
    assert detail_px(1.0, (128, 128), 400) == 400
    assert detail_px(0.25, (128, 128), 400) == 32  # a quarter of the 128 px measured


def test_low_detail_check_rejects_enlarged_images_and_warns(shared: Path, tmp_path: Path, cli, caplog) -> None:
    d = tmp_path / "in" / "happy"
    d.mkdir(parents=True)
    face = obama_face(shared, 96)
    Image.fromarray(face).save(d / "sharp.png")
    for n in range(3):
        Image.fromarray(enlarge(np.roll(face, 4 * n, axis=1), 16)).save(d / f"enlarged{n}.png")
    code, out, _ = cli("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "quality", "--workers", "1",
                       "--quality-min-detail", "32")
    assert code == 0, out
    rejected = rows(tmp_path / "w" / "reports" / "rejected.csv")
    assert sorted(rejected) == [f"happy/enlarged{n}.png" for n in range(3)]
    assert {r["reason"] for r in rejected.values()} == {"low_detail"}
    assert rejected["happy/enlarged0.png"]["detail"].startswith("low_detail: detail px ")
    assert int(rows(tmp_path / "w" / "manifest.csv")["happy/sharp.png"]["detail_px"]) >= 64
    assert "look enlarged" in caplog.text  # three of four images enlarged: the run's median says so


def test_yaw_from_landmarks_geometry() -> None:
    frontal = [[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]]
    assert yaw_from_landmarks(frontal) == 0
    turned = [[40, 50], [80, 50], [75, 70], [45, 90], [75, 90]]  # nose well right of the midline
    assert yaw_from_landmarks(turned) > 30
    assert yaw_from_landmarks([[v[0], -v[1]] for v in turned]) > 30  # upside down: same turn
    assert yaw_from_landmarks(None) is None and yaw_from_landmarks([[1, 2]]) is None


@pytest.mark.slow
def test_pose_and_face_size_from_the_crop_stage_mtcnn_landmarks(tmp_path: Path, shared: Path, cli) -> None:
    src = shared / "faces" / "presence"
    d = tmp_path / "in" / "neutral"
    d.mkdir(parents=True)
    for name in ("fr_obama.jpg", "dl_tom_cruise.jpg", "sk_camera.png"):  # the cameraman looks sideways
        shutil.copy(src / name, d / name)
    code, out, _ = cli("run", "--input", tmp_path / "in", "--out", tmp_path / "w", "--stages", "crop,quality",
                       "--detector", "mtcnn", "--workers", "1")
    assert code == 0, out
    kept = rows(tmp_path / "w" / "manifest.csv")
    assert set(kept) == {"neutral/fr_obama.jpg", "neutral/dl_tom_cruise.jpg"}
    for r in kept.values():
        assert abs(float(r["yaw"])) < 15
        assert int(r["face_px"]) == min(int(r["box_w"]), int(r["box_h"]))
    rejected = rows(tmp_path / "w" / "reports" / "rejected.csv")["neutral/sk_camera.png"]
    assert rejected["stage"] == "quality" and rejected["reason"] == "profile_pose"
