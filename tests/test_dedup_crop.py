"""dedup through crop: the whole images' keypoints beside the face crops', the face guard on their
fits, and the cutout kind, on real photos run through the crop stage."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stages import dupkeys, dupverify
from stages.dedup import DedupParams, find_groups, relation


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def through_crop(images: list[np.ndarray], work: Path) -> list[dict]:
    """The dedup stage's per-item metrics (and its blob, as ``orb``) of each image after the crop stage."""
    from stages.base import Context, Item
    from stages.crop import Crop, CropParams
    from stages.dedup import Dedup
    from stages.images import Decoded

    crop, dedup, out = Crop(CropParams()), Dedup(), []
    crop.ensure_setup()
    for k, a in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        item, image = Item(f"happy/{k}.png", "", ""), Decoded.from_bytes(buf.getvalue())
        o = crop.process(item, image, Context(work))
        o = o[0] if isinstance(o, list) else o
        assert o.status == "kept", k
        d = dedup.process(item, image, Context(work, o.view, {"crop": o}))
        out.append({**d.metrics, "orb": d.blob})
    return out


def paste(bg: np.ndarray, face: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    out = bg.copy()
    x, y = at
    out[y:y + face.shape[0], x:x + face.shape[1]] = face
    return out


def test_through_crop_whole_images_find_a_crop_that_kept_another_face_and_faces_guard_them(shared: Path, tmp_path: Path) -> None:
    """A crop of a group photo around a smaller face (the crop stage keeps another face than in the
    photo) is proved by the whole images' keypoints; two different faces on one background, or two
    photos of one person at the same place in one scene, are not (their faces decide)."""
    group = rgb(shared / "faces" / "groups" / "2008_001322.jpg")  # faces of 76, 63 and 90 px; the 90 px one is kept
    part = np.ascontiguousarray(group[90:320, 30:260])  # around the 76 px face, without the 90 px one
    pres = shared / "faces" / "presence"
    bg = cv2.resize(rgb(pres / "sk_rocket.jpg"), (640, 480), interpolation=cv2.INTER_AREA)
    def face(name: str) -> np.ndarray:  # the crop stage's face crop of a photo, 170 px
        from stages.base import Context, Item
        from stages.crop import Crop, CropParams
        from stages.images import Decoded

        crop = Crop(CropParams())
        crop.ensure_setup()
        o = crop.process(Item(name, "", ""), Decoded.from_bytes((pres / name).read_bytes()), Context(tmp_path))
        o = o[0] if isinstance(o, list) else o
        assert o.view is not None
        return cv2.resize(o.view.at_most(1024), (170, 170), interpolation=cv2.INTER_AREA)
    faces = [face("fr_obama.jpg"), face("fr_obama1.jpg"), face("dl_tom_cruise.jpg")]
    scenes = [paste(bg, faces[0], (60, 150)), paste(bg, faces[2], (400, 150)), paste(bg, faces[1], (60, 150))]
    metrics = through_crop([group, part, *scenes], tmp_path)
    p = DedupParams()
    root = find_groups(metrics, p).root.tolist()
    assert root[0] == root[1]  # the crop and its photo
    assert len({root[0], *root[2:]}) == 4  # the three scenes apart, and apart from the photo

    def sets(k: int) -> list[dupkeys.Packed]:
        return dupkeys.unpack_all(metrics[k]["orb"])
    # The crop's face is another than the photo's: the face crops prove nothing, the whole images do.
    assert not dupverify.verify(sets(0)[0], sets(1)[0]).proves(p.min_inliers, p.min_overlap)
    whole = dupverify.verify(sets(0)[1], sets(1)[1])
    assert whole.proves(p.min_inliers, p.min_overlap) and whole.faces >= dupverify.FACE_INLIERS
    # One background, another face elsewhere: the backgrounds fit, but no inlier lies on a face.
    other = dupverify.verify(sets(2)[1], sets(3)[1])
    assert other.inliers >= p.min_inliers and other.overlap >= p.min_overlap and other.faces < dupverify.FACE_INLIERS
    assert not other.proves(p.min_inliers, p.min_overlap)
    # One background, another photo of one person at the same place: the kept faces are one region,
    # so the face crops decide (and they differ).
    same = dupverify.verify(sets(2)[1], sets(4)[1])
    assert same.inliers >= p.min_inliers and same.faces == 0 and not same.proves(p.min_inliers, p.min_overlap)
    assert not dupverify.verify(sets(2)[0], sets(4)[0]).proves(p.min_inliers, p.min_overlap)


def test_through_crop_a_face_pasted_onto_another_picture_is_a_cutout_and_a_small_crop_is_reframed(shared: Path, tmp_path: Path) -> None:
    pres = shared / "faces" / "presence"
    photo = rgb(pres / "fr_obama.jpg")
    photo = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)  # 455x568, face ~134 px
    x, y, s = 174, 71, 134
    piece = photo[y - s // 3:y + s + s // 3, x - s // 3:x + s + s // 3]
    bg = cv2.resize(rgb(pres / "sk_rocket.jpg"), (640, 480), interpolation=cv2.INTER_AREA)
    cutout = paste(bg, piece, (380, 120))
    small = np.ascontiguousarray(photo[y - s // 2:y + 2 * s, x - s // 2:x + 3 * s // 2])  # a crop around the face
    metrics = through_crop([photo, cutout, small], tmp_path)
    p = DedupParams()
    groups = find_groups(metrics, p)
    assert len(set(groups.root.tolist())) == 1
    sets = [dupkeys.unpack_all(m["orb"]) for m in metrics]
    kinds = {}
    for k in (1, 2):
        edge = groups.edges.get((0, k))
        assert edge is not None and edge.evidence is not None  # proved directly
        kinds[k] = relation(metrics[k], metrics[0], edge, p, sets[k][0], sets[0][0], lambda k=k: (sets[k][1], sets[0][1]))["dup_kind"]
    assert kinds == {1: "cutout", 2: "reframed"}
    # Without the whole images' keypoints (as without crop) there is no telling: both read as crops.
    assert relation(metrics[1], metrics[0], groups.edges[(0, 1)], p, sets[1][0], sets[0][0])["dup_kind"] in ("resized", "reframed")
    assert dupverify.around_faces(sets[2][1], sets[0][1]) >= 2 > dupverify.around_faces(sets[1][1], sets[0][1])
