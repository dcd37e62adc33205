"""crop: find the face, cut it from the full-resolution image, save it as the item's training file.

Detection runs on a reduced copy (the backend's ``side``, a DCT-scaled JPEG decode); boxes are
mapped back to pixels of the upright (EXIF-applied) source image, which is what the manifest's
``box_*`` columns describe. The face is cut from the full-resolution pixels with a margin,
optionally squared, eye-levelled (backends with landmarks), resized and converted to grayscale.

Choice among the candidates, in this order: none -> ``no_face``; none scoring ``min_score`` ->
``low_confidence``; none at least ``min_face`` px / ``min_face_frac`` of the image's shorter side ->
``face_too_small``; then the policy over the remaining ones: ``largest`` keeps the biggest,
``reject`` refuses more than one (``multiple_faces``), ``all`` keeps each as its own item
(``<key>#0``, ``<key>#1``, ... biggest first).

``coarse`` (off by default): under ``largest``, a first look on a quarter of the pixels settles the
photos whose largest face is big, sure and clearly the largest there (``coarse_look``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.base import ConfigError, Context, Item, Outcome, Params, Stage, register
from stages.detectors import DETECTORS, Face, create, missing
from stages.images import Decoded, View, atomic_write, encode_jpeg, to_gray, to_rgb

DEFAULT_DETECTOR = "centerface-bf16"
POLICIES = ("largest", "reject", "all")
EDGES = ("clamp", "pad")


@dataclass(frozen=True)
class CropParams(Params):
    detector: str = field(default=DEFAULT_DETECTOR, metadata={
        "help": f"face detector: {' | '.join(sorted(DETECTORS))}", "flags": ("--detector",), "choices": tuple(sorted(DETECTORS))})
    margin: float = field(default=0.2, metadata={"help": "margin added on each side, as a fraction of the face box"})
    square: bool = field(default=True, metadata={"help": "widen the shorter side of the cut to make it square"})
    size: int = field(default=0, metadata={"help": "output side in px, e.g. 48 or 224 (0: keep the cut's own size)"})
    grayscale: bool = field(default=False, metadata={"help": "save the face in grayscale"})
    min_face: int = field(default=32, metadata={"help": "reject faces whose box is smaller than this many source px"})
    min_face_frac: float = field(default=0.0, metadata={
        "help": "reject faces smaller than this fraction of the image's shorter side"})
    min_score: float = field(default=0.0, metadata={
        "help": "reject faces the detector scores below this (0-1; 0: whatever the backend reports)"})
    policy: str = field(default="largest", metadata={
        "help": "several faces: largest | reject | all (one item per face)", "choices": POLICIES})
    align: bool = field(default=True, metadata={"help": "rotate so the eyes are level (backends with landmarks)"})
    edge: str = field(default="clamp", metadata={
        "help": "a cut past the border: clamp (shift it inside) | pad (fill with black)", "choices": EDGES})
    quality: int = field(default=95, metadata={"help": "JPEG quality of the saved faces (1-100)"})
    detect_side: int = field(default=0, metadata={
        "help": "longer side of the copy detection runs on (0: the backend's own choice)"})
    coarse: bool = field(default=False, metadata={
        "help": "policy largest: look on a small copy first (320 px for centerface) and keep its largest face "
                "where it is plain there (a confident face, big, clearly the largest); other photos get the full "
                "look. About 0.6x crop's time on one-face photos; boxes move a little (dedup through crop finds "
                "~1 point fewer copies)"})

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"crop.detector must be one of {', '.join(sorted(DETECTORS))}, got {self.detector!r}")
        if self.detector != DEFAULT_DETECTOR and (why := missing(self.detector)):
            # Asked for explicitly: fail at configuration time. The default is checked when a run
            # includes crop (Crop.__init__), so a run without crop never needs its packages.
            raise ValueError(why)
        for name in ("margin", "min_face_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= (2.0 if name == "margin" else 1.0):
                raise ValueError(f"crop.{name} must be in 0-{2 if name == 'margin' else 1}, got {v}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"crop.min_score must be in 0-1, got {self.min_score}")
        if self.size < 0 or 0 < self.size < 8:
            raise ValueError(f"crop.size must be 0 or >= 8, got {self.size}")
        if self.min_face < 0:
            raise ValueError(f"crop.min_face must be >= 0, got {self.min_face}")
        if self.policy not in POLICIES:
            raise ValueError(f"crop.policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.edge not in EDGES:
            raise ValueError(f"crop.edge must be one of {', '.join(EDGES)}, got {self.edge!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"crop.quality must be 1-100, got {self.quality}")
        if self.detect_side < 0 or 0 < self.detect_side < 64:
            raise ValueError(f"crop.detect_side must be 0 or >= 64, got {self.detect_side}")


@register
class Crop(Stage[CropParams]):
    name = "crop"
    Params = CropParams
    version = 2  # 2: faces encoded by simplejpeg
    columns = ("box_x", "box_y", "box_w", "box_h", "det_score", "n_faces")
    produces_file = True
    #: cuts from the full-resolution pixels, so its detection copy is reduced from them (pipeline.shard)
    reads_full = True

    def __init__(self, params: CropParams | None = None) -> None:
        super().__init__(params)
        if params is not None and (why := missing(self.params.detector)):

            raise ConfigError(why)

    def setup(self) -> None:
        self.detector = create(self.params.detector)

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome | list[Outcome]:
        p: CropParams = self.params
        found = coarse_look(self.detector, image, item, p)
        faces, shape = found or find_faces(self.detector, image, item, p.detect_side)
        chosen = choose(faces, image.size, p)
        if isinstance(chosen, tuple):
            reason, detail, best = chosen
            if not faces and p.detector == "annotations":
                detail = "no annotation box (annot_A_box/annot_B_box/annot_C_box) for this item"
            elif not faces:
                detail = f"{p.detector} found no face (detected on {shape[1]}x{shape[0]})"
            return Outcome.rejected(item.key, reason, detail, **(face_metrics(best, len(faces)) if best else {"n_faces": 0}))
        full = image.full()
        if p.policy != "all":
            return self._save(item.key, full, chosen[0], len(chosen), p, ctx)
        return [self._save(f"{item.key}#{i}", full, face, len(chosen), p, ctx) for i, face in enumerate(chosen)]

    def _save(self, key: str, full: np.ndarray, face: Face, n: int, p: CropParams, ctx: Context) -> Outcome:
        cut, angle = cut_face(full, face, p)
        data = encode_jpeg(cut, p.quality)
        path, rel = ctx.artifact_path("faces", key, ".jpg")
        atomic_write(path, data)
        # Hand on the saved file's pixels, not the cut: a resumed run (restore) sees the same image, and
        # dedup matches the faces better so (through crop, the development set's tuning part: pair recall
        # 0.912 against 0.868 with the cut itself; BENCHMARKS.md, e2e).
        view = View(Decoded.from_bytes(data).full())
        metrics = face_metrics(face, n) | {"angle": angle, "width": view.size[0], "height": view.size[1]}
        return Outcome(key, artifact=rel, metrics=metrics, view=view)

    def restore(self, item: Item, outcome: Outcome, ctx: Context) -> View | None:
        # A face file deleted from the workspace fails the shard loudly rather than letting later
        # stages look at something else.
        return View(Decoded((ctx.work / outcome.artifact).read_bytes).full())


def find_faces(detector: Any, image: Decoded, item: Item, side: int = 0, *, coarse: bool = False) -> tuple[list[Face], tuple[int, ...]]:
    """Faces in source pixels of the upright image, and the shape of the copy detection ran on
    (*coarse*: the backend's coarse look, ``detect_at`` its ``coarse_side``)."""
    side = detector.coarse_side if coarse else side or detector.side
    rgb = to_rgb(image.full() if side == 0 else image.at_most(side))
    w, h = image.size
    sx, sy = w / rgb.shape[1], h / rgb.shape[0]
    if coarse:
        found = detector.detect_at(rgb, item, side)
    elif rgb.shape[1] < w:  # a reduced copy: the backend may look closer at the full pixels
        found = detector.detect_closer(rgb, item, image.full)
    else:
        found = detector.detect(rgb, item)
    return [f.scaled(sx, sy) for f in found], rgb.shape


#: What makes a face plain on the coarse copy (chosen on the tuned part of faces/dev, BENCHMARKS.md):
#: its score, its shorter side as a fraction of the copy's longer side, and how many times the next
#: face's area it covers.
PLAIN_SCORE, PLAIN_SIDE, PLAIN_LEAD = 0.8, 0.1, 1.5


def coarse_look(detector: Any, image: Decoded, item: Item, p: CropParams) -> tuple[list[Face], tuple[int, ...]] | None:
    """The faces of the backend's first, cheap look (``coarse_side``) when they settle the photo
    under policy ``largest`` (``p.coarse``): the largest face scores ``PLAIN_SCORE``, measures
    ``PLAIN_SIDE`` of the copy's longer side, covers ``PLAIN_LEAD`` times the next one's area and
    passes ``choose``. None: the photo needs the full look.

    Under ``largest`` only the biggest face counts, and a face big and sure on a quarter of the
    pixels is found, and is the biggest, on the full copy too (faces/dev's tuned part: the same
    face chosen on all 78 of 254 photos the rule settles); the small faces this look misses
    matter to ``all`` and ``reject``, which never take it.
    """
    side = getattr(detector, "coarse_side", 0)
    if not (p.coarse and side and p.policy == "largest" and not p.detect_side and max(image.size) > side):
        return None
    faces, shape = find_faces(detector, image, item, coarse=True)
    faces.sort(key=lambda f: (-f.area, -f.score, f.box))
    if not faces:
        return None
    top = faces[0]
    if (top.score < PLAIN_SCORE or min(top.box[2], top.box[3]) < PLAIN_SIDE * max(image.size)
            or (len(faces) > 1 and top.area < PLAIN_LEAD * faces[1].area)):
        return None
    return (faces, shape) if not isinstance(choose(faces, image.size, p), tuple) else None


def choose(faces: list[Face], size: tuple[int, int], p: CropParams) -> list[Face] | tuple[str, str, Face | None]:
    """Every face that qualifies (biggest first; ``largest`` keeps the first), or (reason, detail,
    most relevant face) to reject."""
    if not faces:
        return "no_face", "", None
    by_size = sorted(faces, key=lambda f: (-f.area, -f.score, f.box))
    confident = [f for f in by_size if f.score >= p.min_score]
    if not confident:
        best = max(faces, key=lambda f: (f.score, f.area))
        return "low_confidence", f"best face score {best.score:.3f} < min_score {p.min_score}", best
    floor = max(float(p.min_face), p.min_face_frac * min(size))
    big = [f for f in confident if min(f.box[2], f.box[3]) >= floor]
    if not big:
        f = confident[0]
        return "face_too_small", (f"largest face {f.box[2]:.0f}x{f.box[3]:.0f} px < minimum {floor:.0f} px "
                                  f"(min_face {p.min_face}, min_face_frac {p.min_face_frac})"), f
    if p.policy == "reject" and len(big) > 1:
        return "multiple_faces", f"{len(big)} faces and policy 'reject'", big[0]
    return big


def face_metrics(f: Face, n: int) -> dict[str, Any]:
    x, y, w, h = (round(v) for v in f.box)
    lm = None if f.landmarks is None else [[round(px, 1), round(py, 1)] for px, py in f.landmarks]
    return {"box_x": x, "box_y": y, "box_w": w, "box_h": h, "det_score": round(f.score, 4), "n_faces": n, "landmarks": lm}


def region(face: Face, p: CropParams, img_w: int, img_h: int) -> tuple[float, float, float, float]:
    """Centre x, y and size w, h of the cut in source pixels: margin, square, clamped if asked."""
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    w, h = w * (1 + 2 * p.margin), h * (1 + 2 * p.margin)
    if p.square:
        w = h = max(w, h)
    if p.edge == "clamp":
        if p.square:
            w = h = min(w, img_w, img_h)
        w, h = min(w, img_w), min(h, img_h)
        cx = min(max(cx, w / 2), img_w - w / 2)
        cy = min(max(cy, h / 2), img_h - h / 2)
    return cx, cy, w, h


def eye_angle(face: Face) -> float:
    """Degrees the line between the eyes is tilted (positive: the image-right eye is lower)."""
    if face.landmarks is None:
        return 0.0
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx)) if rx != lx or ry != ly else 0.0


def cut_face(full: np.ndarray, face: Face, p: CropParams) -> tuple[np.ndarray, float]:
    """The face cut from *full* per the parameters, and the rotation applied (degrees)."""
    import cv2

    img_h, img_w = full.shape[:2]
    cx, cy, w, h = region(face, p, img_w, img_h)
    angle = round(eye_angle(face), 2) if p.align else 0.0
    ow, oh = max(1, round(w)), max(1, round(h))
    if abs(angle) < 0.5:  # not worth resampling: cut the pixels as they are
        angle = 0.0
        x0, y0 = round(cx - w / 2), round(cy - h / 2)
        if p.edge == "clamp":  # rounding must not push a clamped cut one pixel past the border
            x0, y0 = min(max(0, x0), img_w - ow), min(max(0, y0), img_h - oh)
        cut = full[max(0, y0):max(0, y0 + oh), max(0, x0):max(0, x0 + ow)]
        pads = (max(0, -y0), max(0, y0 + oh - img_h), max(0, -x0), max(0, x0 + ow - img_w))
        if any(pads):  # edge == "pad": the part past the border is black
            cut = cv2.copyMakeBorder(cut, *pads, cv2.BORDER_CONSTANT, value=0)
    else:
        # Map output pixels to source pixels: rotate about the face centre by the eye tilt.
        t = math.radians(angle)
        c, s = math.cos(t), math.sin(t)
        m = np.array([[c, -s, cx - (c * ow / 2 - s * oh / 2)], [s, c, cy - (s * ow / 2 + c * oh / 2)]])
        border = cv2.BORDER_CONSTANT if p.edge == "pad" else cv2.BORDER_REPLICATE
        cut = cv2.warpAffine(full, m, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=border, borderValue=0)
    if p.size:
        tw, th = (p.size, p.size) if p.square else _fit(ow, oh, p.size)
        interp = cv2.INTER_AREA if tw < cut.shape[1] else cv2.INTER_CUBIC
        cut = cv2.resize(cut, (tw, th), interpolation=interp)
    cut = to_gray(cut) if p.grayscale else to_rgb(cut)
    return np.ascontiguousarray(cut), angle


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is *side*."""
    k = side / max(w, h)
    return max(1, round(w * k)), max(1, round(h * k))
