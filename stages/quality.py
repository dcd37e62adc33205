"""quality: per-image scores in the fused pass, thresholds decided over the whole run.

Per item, on the face crop the crop stage handed on (else on the whole image), reduced to at most
``SIDE`` px, so a score costs the same for a 2000 px face as for a 200 px one: sharpness
(variance of the Laplacian with the longer side resized to ``SHARP_SIDE``, so that it compares
across image sizes), brightness (5th and 95th percentiles and mean of the gray
levels), contrast (standard deviation of the gray levels), entropy (bits of the gray histogram),
face size (the crop's box, or the image when crop did not run: a folder of face crops), chroma
(mean difference between colour channels: 0 for grayscale), detail (how many px across the face
really holds: an upscaled thumbnail has far fewer than its pixel size) and a yaw estimate from five
facial landmarks when the crop stage stored them.

The dataset step applies thresholds to the stored scores only; each threshold is a number, a
percentile of that score over the run (``p5``) or ``off``. Changing one re-decides, never re-scores.
An image failing several checks gets the first reason in ``CHECKS`` order (a black image is
``too_dark`` rather than ``low_contrast``); its detail names every failed check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stages.base import Context, Item, Outcome, Params, Stage, register
from stages.images import Decoded, to_gray

log = logging.getLogger(__name__)

#: Longer side of the face crop (or of the whole image, when no crop is handed on) that is scored.
SIDE = 256
#: Sharpness is measured at this longer side: Laplacian variance depends on scale.
SHARP_SIDE = 128
#: Nose depth in front of the eye/mouth plane over half the eye/mouth width, for an average adult
#: head (about 26 mm over 28 mm); turns the nose's offset from the face midline into a yaw angle.
NOSE_DEPTH = 0.93
#: Detail ladder: fractions of the side an image is shrunk to and enlarged back from.
DETAIL_STEPS = (1 / 16, 1 / 12, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)
#: An image holds no more detail than the smallest step whose round trip changes it by at most this
#: mean absolute difference over its contrast (standard deviation). Sharp 48 px face cuts lose 0.07-0.10
#: at 2/3 and about 0.2 at 1/3; the same cuts enlarged from 16 px lose 0.05 at 1/3 (BENCHMARKS.md).
DETAIL_LOSS = 0.06


def _threshold(help_: str, default: str) -> Any:
    return field(default=default, metadata={
        "help": help_ + " (a number; pN: the Nth percentile over the run; mF: F times the run's median; or off)",
        "decide": True})


@dataclass(frozen=True)
class QualityParams(Params):
    # Defaults from FER2013 train and the shared face photos (BENCHMARKS.md, "quality").
    min_sharpness: str = _threshold("blurry below this sharpness (Laplacian variance, longer side <= 128 px)", "m0.1")
    dark_level: str = _threshold("too_dark when the brightest 5%% of pixels are below this gray level", "40")
    bright_level: str = _threshold("too_bright when the darkest 5%% of pixels are above this gray level", "210")
    min_contrast: str = _threshold("low_contrast below this standard deviation of the gray levels", "8")
    min_face: str = _threshold("face_too_small when the face (or the image) is below this many px on its shorter side", "32")
    max_yaw: str = _threshold("profile_pose when the estimated head yaw exceeds this many degrees", "50")
    min_detail: str = _threshold("low_detail when the face holds detail for fewer than this many px across (upscaled or "
                                 "smoothed images)", "off")

    def __post_init__(self) -> None:
        for f in fields(self):
            parse_threshold(f"quality.{f.name}", getattr(self, f.name))


def parse_threshold(name: str, value: str) -> tuple[str, float] | None:
    """``"12.5"`` -> ("abs", 12.5); ``"p5"`` -> ("pct", 5.0); ``"m0.1"`` -> ("median", 0.1); ``"off"`` -> None."""
    v = str(value).strip().lower()
    if v in ("", "off", "none"):
        return None
    kind = {"p": "pct", "m": "median"}.get(v[0], "abs")
    try:
        x = float(v if kind == "abs" else v[1:])
        if not math.isfinite(x) or (kind == "pct" and not 0 <= x <= 100) or (kind == "median" and x < 0):
            raise ValueError
    except ValueError:
        raise ValueError(f"{name} must be a number, pN (a percentile 0-100), mF (F >= 0 times the median) "
                         f"or off, got {value!r}") from None
    return kind, x


@dataclass(frozen=True)
class Check:
    reason: str
    param: str
    score: str
    below: bool          # True: rejected when the score is below the threshold
    what: str


#: In priority order: the first failed check names the reason.
CHECKS = (
    Check("too_dark", "dark_level", "bright_p95", True, "brightest 5% at"),
    Check("too_bright", "bright_level", "bright_p5", False, "darkest 5% at"),
    Check("low_contrast", "min_contrast", "contrast", True, "contrast"),
    Check("blurry", "min_sharpness", "sharpness", True, "sharpness"),
    Check("face_too_small", "min_face", "face_px", True, "face"),
    Check("low_detail", "min_detail", "detail_px", True, "detail px"),
    Check("profile_pose", "max_yaw", "abs_yaw", False, "yaw"),
)


def scores(pixels: np.ndarray, small: np.ndarray | None = None) -> dict[str, float]:
    """Image scores of an HxW or HxWx3 uint8 image (see the module doc); *small*: its gray copy at
    ``SHARP_SIDE`` (``_at_sharp_side``) when the caller has it already."""
    gray = to_gray(pixels)
    small = _at_sharp_side(gray) if small is None else small
    sharp = float(cv2.Laplacian(small, cv2.CV_32F).var())
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist) / hist.sum()
    p = hist[hist > 0] / hist.sum()
    chroma = 0.0
    if pixels.ndim == 3:
        c = pixels.astype(np.int16)
        chroma = float((np.abs(c[..., 0] - c[..., 1]) + np.abs(c[..., 1] - c[..., 2]) + np.abs(c[..., 0] - c[..., 2])).mean() / 3)
    return {
        "sharpness": round(sharp, 2),
        "bright_p5": int(np.searchsorted(cdf, 0.05)),
        "bright_p95": int(np.searchsorted(cdf, 0.95)),
        "brightness": round(float(gray.mean()), 2),
        "contrast": round(float(gray.std()), 2),
        "entropy": round(max(0.0, float(-(p * np.log2(p)).sum())), 3),  # max: no -0.0
        "chroma": round(chroma, 2),
    }


def _at_sharp_side(gray: np.ndarray) -> np.ndarray:
    """float32 *gray* with the longer side at most ``SHARP_SIDE``; never upscaled (interpolation
    invents no detail, a score would only measure the interpolation)."""
    h, w = gray.shape[:2]
    small: np.ndarray = gray.astype(np.float32)
    s = SHARP_SIDE / max(h, w)
    if s < 1:
        small = cv2.resize(small, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small


def face_detail(pixels: np.ndarray, face_px: int, small: np.ndarray | None = None) -> int:
    """``detail_px`` of *pixels* (HxW or HxWx3 uint8) showing a face *face_px* px across; *small* as for ``scores``."""
    small = _at_sharp_side(to_gray(pixels)) if small is None else small
    return detail_px(detail(small), small.shape[:2], face_px)


def detail(gray: np.ndarray) -> float:
    """Fraction of its side a float32 gray image really resolves (1.0: all of it).

    The smallest ``DETAIL_STEPS`` fraction the image can be shrunk to (area) and enlarged back from
    (cubic) while changing by at most ``DETAIL_LOSS`` of its contrast (mean absolute difference over
    the standard deviation); steps below 4 px are not tried. The loss falls as the fraction grows, so
    the steps are bisected. A flat image has no detail to measure and counts as full.
    """
    h, w = gray.shape[:2]
    sd = float(gray.std())
    if sd < 1:
        return 1.0
    steps = [f for f in DETAIL_STEPS if min(round(w * f), round(h * f)) >= 4]
    lo, hi = 0, len(steps)  # answer: steps[hi], or 1.0 when hi == len(steps)
    while lo < hi:
        mid = (lo + hi) // 2
        f = steps[mid]
        small = cv2.resize(gray, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        back = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        if cv2.norm(gray, back, cv2.NORM_L1) <= DETAIL_LOSS * sd * gray.size:
            hi = mid
        else:
            lo = mid + 1
    return steps[hi] if hi < len(steps) else 1.0


def detail_px(fraction: float, shape: tuple[int, ...], face_px: int) -> int:
    """Px of detail across the face: what an image enlarged from that many px would show.

    *fraction* is ``detail`` of an image of *shape* (longer side at most ``SHARP_SIDE``) showing the
    face; a face resolved at that size is credited with its full *face_px*.
    """
    if fraction >= 1:
        return int(face_px)
    return round(min(face_px, fraction * min(shape[:2])))


def yaw_from_landmarks(points: Any) -> float | None:
    """Signed head yaw in degrees from 5 landmarks (eyes, nose, mouth corners), or None.

    Accepts a list of five [x, y] (MTCNN order: two eyes, nose, two mouth corners) or MTCNN's
    keypoints dict. The eye line is rotated level (roll removed); the nose's horizontal offset
    from the midline through the eye and mouth centres, over half the mean eye/mouth width,
    is ``NOSE_DEPTH * tan(yaw)`` for a head turned by ``yaw`` (orthographic view).
    """
    try:
        if isinstance(points, Mapping):
            points = [points[k] for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")]
        pts = np.asarray(points, dtype=np.float64).reshape(5, 2)
    except (KeyError, TypeError, ValueError):
        return None
    if not np.isfinite(pts).all():
        return None
    eyes = pts[:2][np.argsort(pts[:2, 0])]
    mouth = pts[3:][np.argsort(pts[3:, 0])]
    dx, dy = eyes[1] - eyes[0]
    if dx == 0 and dy == 0:
        return None
    a = -math.atan2(dy, dx)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    e, m, nose = eyes @ rot.T, mouth @ rot.T, pts[2] @ rot.T
    half = (abs(e[1, 0] - e[0, 0]) + abs(m[1, 0] - m[0, 0])) / 4
    if half <= 0:
        return None
    ec, mc = e.mean(axis=0), m.mean(axis=0)
    t = 0.5 if mc[1] == ec[1] else (nose[1] - ec[1]) / (mc[1] - ec[1])
    offset = nose[0] - (ec[0] + t * (mc[0] - ec[0]))
    return round(math.degrees(math.atan(offset / half / NOSE_DEPTH)), 1)


@register
class Quality(Stage[QualityParams]):
    name = "quality"
    Params = QualityParams
    columns = ("sharpness", "brightness", "contrast", "entropy", "face_px", "detail_px", "yaw")
    version = 3

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        crop = ctx.upstream.get("crop")
        cm: Mapping[str, Any] = crop.metrics if crop is not None else {}
        if ctx.view is not None:
            face = (int(cm.get("box_w", ctx.view.size[0])), int(cm.get("box_h", ctx.view.size[1])))
            pixels = ctx.view.at_most(SIDE)
        else:
            pixels, face = image.at_most(SIDE), image.size
        small = _at_sharp_side(to_gray(pixels))
        metrics: dict[str, Any] = {**scores(pixels, small), "face_px": min(face), "detail_px": face_detail(pixels, min(face), small)}
        yaw = yaw_from_landmarks(cm["landmarks"]) if cm.get("landmarks") is not None else None
        if yaw is not None:
            metrics["yaw"] = yaw
        return Outcome(item.key, metrics=metrics)

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        limits = self.thresholds(records)
        warn_enlarged(records)
        counts = dict.fromkeys(limits, 0)
        for r in sorted(records, key=lambda r: r["key"]):
            failed = []
            for c in CHECKS:
                value = _score(r["metrics"], c.score)
                t = limits.get(c.reason)
                if value is None or t is None:
                    continue
                if (value < t) if c.below else (value > t):
                    failed.append(f"{c.reason}: {c.what} {value:g} {'<' if c.below else '>'} {t:g}")
            if failed:
                reason = failed[0].split(":", 1)[0]
                counts[reason] += 1
                yield Outcome.rejected(r["key"], reason, "; ".join(failed))
            else:
                yield Outcome(r["key"])
        log.info("quality: rejected %s", ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none")

    def thresholds(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """Reason -> absolute threshold; percentiles resolved over the scores of these records."""
        out: dict[str, float] = {}
        for c in CHECKS:
            spec = parse_threshold(f"quality.{c.param}", getattr(self.params, c.param))
            if spec is None:
                continue
            kind, x = spec
            if kind != "abs":
                values = np.array([v for r in records if (v := _score(r["metrics"], c.score)) is not None], dtype=np.float64)
                if not len(values):
                    continue
                x = float(np.percentile(values, x)) if kind == "pct" else x * float(np.median(values))
                log.info("quality: %s %s over %d images = %g", c.param, getattr(self.params, c.param), len(values), x)
            out[c.reason] = x
        return out


def warn_enlarged(records: list[dict[str, Any]]) -> None:
    """Warn when the typical image holds under half the detail its size suggests (enlarged copies)."""
    pairs = [(d, f) for r in records if (d := _score(r["metrics"], "detail_px")) is not None and (f := _score(r["metrics"], "face_px"))]
    if not pairs:
        return
    detail_med, face_med = (float(np.median(v)) for v in zip(*pairs, strict=True))
    if detail_med < 0.5 * face_med:
        log.warning("quality: the median image holds about %g px of detail across a %g px face: most images look enlarged "
                    "from smaller ones (or smoothed), and accuracy published for sharp copies of this data will not "
                    "transfer; --quality-min-detail N rejects the images below N px", detail_med, face_med)


def _score(m: Mapping[str, Any], name: str) -> float | None:
    if name == "abs_yaw":
        y = m.get("yaw")
        return abs(float(y)) if isinstance(y, (int, float)) else None
    v = m.get(name)
    return float(v) if isinstance(v, (int, float)) else None
