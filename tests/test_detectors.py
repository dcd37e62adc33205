"""The default face detector (centerface), the cascade (BlazeFace proposals, MTCNN second opinion)
and blazeface on real photos of faces/dev: masked faces, faces of 14-20 px, boxes near the truth
(IoU), negatives (animals, a LEGO figure, a toy with a drawn face, painted sneakers) without a face."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stages.base import Item
from stages.crop import DEFAULT_DETECTOR, CropParams, choose, find_faces
from stages.detectors import DETECTORS, Face, create
from stages.detectors.base import box_iou, refit
from stages.detectors.blazeface import MODELS, BlazeNet, anchors
from stages.images import Decoded, to_rgb

#: faces/dev's truth (the ``dev_truth`` fixture): per file, its boxes and their kinds
Truth = dict[str, list[tuple[tuple[float, ...], str]]]
HARD_NEGATIVES = ("sir_lego.jpg", "sir_toy.jpg", "sir_canvas.jpg", "sir_shoes.jpg")  # printed, drawn, painted faces; legs


def faces_in(det: object, path: Path) -> list[Face]:
    return find_faces(det, Decoded.from_bytes(path.read_bytes()), Item(path.name, str(path), str(path)))[0]


def best_iou(faces: list[Face], box: tuple[float, ...]) -> float:
    return max((box_iou(f.box, box) for f in faces), default=0.0)


@pytest.fixture(scope="module")
def default() -> object:
    return create(DEFAULT_DETECTOR)


def test_the_default_is_centerface_in_bfloat16() -> None:
    assert DEFAULT_DETECTOR == "centerface-bf16" and DETECTORS[DEFAULT_DETECTOR].side == 640
    assert DETECTORS[DEFAULT_DETECTOR].runtime == "openvino" and DETECTORS[DEFAULT_DETECTOR].precision == ""


def test_the_default_runs_on_openvino_only_where_the_cpu_computes_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO in bfloat16 where the CPU has it (AVX512-BF16 or AMX, as /proc/cpuinfo lists them);
    elsewhere float32 on ONNX Runtime, as ``centerface`` runs (OpenVINO's float32 is slower)."""
    from stages import netrun

    monkeypatch.delenv("FACESIFT_RUNTIME", raising=False)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert netrun.native_bf16() == native or not flags
    fresh = create(DEFAULT_DETECTOR)
    assert isinstance(fresh.run, netrun.OpenVINONetwork) == netrun.native_bf16()  # type: ignore[attr-defined]
    assert fresh.where() == (("openvino", "") if netrun.native_bf16() else ("onnxruntime", "f32"))  # type: ignore[attr-defined]


# measured: 4 of 5, 10 of 15 and 7 of 8 masked faces at IoU >= 0.5
@pytest.mark.parametrize("name, at_least", [("mw_train_img_11.jpg", 4), ("mw_train_img_127.jpg", 9), ("mw_train_img_105.jpg", 6)])
def test_masked_faces_found_near_the_truth(shared: Path, default: object, name: str, at_least: int, dev_truth: Truth) -> None:
    faces = faces_in(default, shared / "faces" / "dev" / "images" / name)
    truth = dev_truth[name]
    masked = [b for b, kind in truth if kind == "with_mask"]
    found = [b for b in masked if best_iou(faces, b) >= 0.5]
    assert len(found) >= at_least, (name, len(found), len(masked))
    assert all(f.landmarks is not None and len(f.landmarks) == 5 for f in faces)
    assert len(faces) <= len(truth) + 3  # a few background faces carry no box; not a box on every texture


def test_small_faces_of_14_to_38_px_found(shared: Path, default: object, dev_truth: Truth) -> None:
    truth = dev_truth
    for name, n in (("fddb_000127.jpg", 3), ("fddb_000066.jpg", 3)):
        faces = faces_in(default, shared / "faces" / "dev" / "images" / name)
        small = [b for b, _ in truth[name] if b[2] < 40]
        assert sum(best_iou(faces, b) >= 0.5 for b in small) >= n, name


def test_the_closer_look_finds_small_faces_in_a_large_photo(shared: Path, default: object, monkeypatch: pytest.MonkeyPatch, dev_truth: Truth) -> None:
    """A crowd of 112 faces, most under 40 px, in a 2000 x 1388 photo (faces/dev's tuned part): the
    second, closer look at the small unsure candidates of the 640 px copy finds faces the first look
    misses, and keeps every face the first look found."""
    name = "mw_train_img_7.jpg"
    truth = [b for b, _ in dev_truth[name]]
    both = faces_in(default, shared / "faces" / "dev" / "images" / name)
    monkeypatch.setattr(DETECTORS[DEFAULT_DETECTOR], "closer_max", 0)  # the first look alone
    first = faces_in(default, shared / "faces" / "dev" / "images" / name)
    near = [sum(best_iou(faces, b) >= 0.4 for b in truth) for faces in (first, both)]
    # measured: 16 and 43 of 112 true faces at IoU >= 0.4, 22 and 53 boxes
    assert near[1] >= near[0] + 20, near
    assert all(best_iou(both, f.box) > 0.99 for f in first)
    assert len(both) <= len(truth)


def kept(faces: list[Face], path: Path) -> bool:
    """Whether the crop stage's defaults would keep one of *faces* (size rules included)."""
    size = Decoded.from_bytes(path.read_bytes()).size
    return not isinstance(choose(faces, size, CropParams(detector="annotations")), tuple)


def test_negatives_give_no_face(shared: Path, default: object) -> None:
    dev = shared / "faces" / "dev"
    with open(dev / "negatives.csv", encoding="utf-8", newline="") as fh:
        names = [r["file"] for r in csv.DictReader(fh)]
    assert set(HARD_NEGATIVES) <= set(names) and len(names) == 46
    found = {n: faces_in(default, dev / "images" / n) for n in names}
    # measured: a box on 1 of 46 (the Statue of Liberty in a street photo, kept); the target allows 2 of 46
    assert len([n for n, f in found.items() if f]) <= 2
    assert len([n for n, f in found.items() if kept(f, dev / "images" / n)]) <= 2
    assert not [n for n in ("sir_lego.jpg", "sir_toy.jpg", "sir_shoes.jpg") if found[n]]


def test_no_face_photos_of_presence_stay_empty(shared: Path, default: object) -> None:
    with open(shared / "faces" / "presence.csv", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["has_face"] == "0"]
    assert len(rows) == 15
    assert [r["file"] for r in rows if faces_in(default, shared / "faces" / r["file"])] == []


def test_cascade_finds_masked_faces_with_landmarks(shared: Path, dev_truth: Truth) -> None:
    det = create("cascade")
    name = "mw_train_img_105.jpg"
    faces = faces_in(det, shared / "faces" / "dev" / "images" / name)
    masked = [b for b, kind in dev_truth[name] if kind == "with_mask"]
    assert sum(best_iou(faces, b) >= 0.5 for b in masked) >= 6  # measured: 7 of 8
    assert faces and all(f.landmarks is not None and len(f.landmarks) == 5 for f in faces)  # MTCNN's O-Net adds them
    assert not faces_in(det, shared / "faces" / "dev" / "images" / "sir_lego.jpg")


def test_centerface_landmarks_lie_in_the_face(shared: Path, default: object) -> None:
    faces = faces_in(default, shared / "faces" / "presence" / "fr_obama.jpg")
    # presence's boxes are tight; ours run from hairline to chin like faces/dev's (measured IoU 0.56)
    assert len(faces) == 1 and box_iou(faces[0].box, (349, 142, 268, 267)) >= 0.5
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = faces[0].landmarks  # type: ignore[misc]
    x, y, w, h = faces[0].box
    assert all(x < px < x + w and y < py < y + h for px, py in faces[0].landmarks)  # type: ignore[union-attr]
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)  # eyes, nose, mouth in LANDMARKS order


def test_centerface_runtimes_and_bfloat16_find_the_same_faces(shared: Path, default: object,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """centerface (float32 on ONNX Runtime) against float32 on OpenVINO and the default,
    centerface-bf16 (OpenVINO), on photos of the untuned part and a masked street photo: the same
    faces in the same place; in bfloat16 the boxes and scores move a little."""
    from stages.detectors.centerface import CenterFace

    monkeypatch.delenv("FACESIFT_RUNTIME", raising=False)
    assert CenterFace.runtime == "onnxruntime" and CenterFace.precision == "f32"
    monkeypatch.setattr(CenterFace, "runtime", "openvino")
    reference = CenterFace()
    monkeypatch.setattr(CenterFace, "runtime", "onnxruntime")
    plain, bf16 = create("centerface"), default
    n = 0
    for name in ("fddb_000034.jpg", "fddb_000066.jpg", "fddb_000104.jpg", "fddb_000206.jpg", "fddb_000260.jpg",
                 "fddb_000356.jpg", "fddb_000452.jpg", "fddb_000550.jpg", "mw_train_img_105.jpg"):
        path = shared / "faces" / "dev" / "images" / name
        a, b, c = faces_in(reference, path), faces_in(plain, path), faces_in(bf16, path)
        assert len(a) == len(b) == len(c), name
        for f in a:
            g = max(b, key=lambda g: box_iou(g.box, f.box))
            assert box_iou(g.box, f.box) >= 0.999 and abs(g.score - f.score) <= 1e-3, (name, f, g)
            g = max(c, key=lambda g: box_iou(g.box, f.box))
            # measured on a CPU with AMX: IoU 0.978 or more, scores within 0.013
            assert box_iou(g.box, f.box) >= 0.95 and abs(g.score - f.score) <= 0.03, (name, f, g)
        n += len(a)
    assert n >= 25  # measured: 30


def test_blazeface_anchors_and_a_box_near_the_truth(shared: Path) -> None:
    assert anchors(128, 128, MODELS["short"][2]).shape == (896, 2)
    assert anchors(192, 192, MODELS["full"][2]).shape == (2304, 2)
    assert anchors(384, 256, MODELS["short"][2]).shape == (48 * 32 * 2 + 24 * 16 * 6, 2)
    det = create("blazeface")
    faces = faces_in(det, shared / "faces" / "presence" / "fr_obama.jpg")
    assert len(faces) == 1 and box_iou(faces[0].box, (349, 142, 268, 267)) >= 0.6 and faces[0].landmarks is None
    # the short-range net is fully convolutional: one face found on a non-square view too
    rgb = to_rgb(Decoded.from_bytes((shared / "faces" / "presence" / "fr_obama.jpg").read_bytes()).at_most(400))
    rows = BlazeNet("short")(np.ascontiguousarray(rgb), 0.5, 256)
    assert len(rows) >= 1 and all(0 <= v <= 1.05 for v in rows[0][1:])


def test_refit_moves_and_scales_about_the_centre() -> None:
    f = refit(Face((10.0, 20.0, 100.0, 50.0), 0.9), (0.1, -0.2, 1.0, 2.0))
    assert f.box == pytest.approx((20.0, -15.0, 100.0, 100.0)) and f.score == 0.9


def test_tiny_and_flat_images_give_no_face(default: object) -> None:
    assert default.detect(np.zeros((10, 10, 3), np.uint8), Item("x", "", "")) == []  # type: ignore[attr-defined]
    assert default.detect(np.full((300, 400, 3), 128, np.uint8), Item("x", "", "")) == []  # type: ignore[attr-defined]


def test_centerface_eye_line_follows_tilted_faces(shared: Path, default: object) -> None:
    """The landmarks crop levels the eyes with: on FDDB faces whose annotated ellipse is tilted by
    15 degrees or more (and at least 80 px tall), the eye line leans the same way by about as much."""
    import math

    from stages.crop import eye_angle

    with open(shared / "faces" / "dev" / "fddb_ellipses.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs = []
    for r in rows:
        roll = math.degrees(float(r["angle_rad"]) % math.pi - math.pi / 2)  # the ellipse's long axis against the vertical
        if abs(roll) < 15 or float(r["major_axis_radius"]) < 40:
            continue
        cx, cy = float(r["center_x"]), float(r["center_y"])
        found = [f for f in faces_in(default, shared / "faces" / "dev" / "images" / r["file"])
                 if f.box[0] < cx < f.box[0] + f.box[2] and f.box[1] < cy < f.box[1] + f.box[3]]
        if found:
            pairs.append((roll, eye_angle(found[0])))
    # measured: 26 such faces found, 25 leaning the same way, median error 6 degrees
    assert len(pairs) >= 22
    assert sum((a > 0) == (r > 0) for r, a in pairs) >= len(pairs) - 2
    assert float(np.median([abs(a - r) for r, a in pairs])) <= 8.0
