"""The face-detector contract (Face, FaceDetector), the backend registry, and shared helpers.

A backend is a small class registered by name. It declares the longer side of the reduced copy it
detects on (``side``; 0 means full resolution), the Python modules it needs and the pip line that
installs them. The crop stage decodes that reduced copy, calls ``detect`` and maps the boxes back to
the pixels of the upright source image.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from stages.base import ConfigError as ConfigError  # re-exported for the backends
from stages.base import Item as Item
from stages.base import Registry, quiet_native_stderr
from stages.base import package_file as package_file

quiet_stderr = quiet_native_stderr  # re-exported for the backends

#: Order of the five landmarks a backend may return, named as seen in the image (``left_eye``
#: is the eye on the image's left side).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face.

    Attributes:
        box: x, y, w, h in pixels of the array given to ``detect``.
        score: the detector's confidence in 0..1 (1.0 for boxes given by the dataset).
        landmarks: points in LANDMARKS order, or None when the backend has none.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, ...] | None = None

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def moved(self, dx: float, dy: float) -> Face:
        """The same face in a frame whose origin lies (-dx, -dy) from this one's (window -> image pixels)."""
        x, y, w, h = self.box
        lm = None if self.landmarks is None else tuple((px + dx, py + dy) for px, py in self.landmarks)
        return Face((x + dx, y + dy, w, h), self.score, lm)

    def scaled(self, sx: float, sy: float) -> Face:
        """The same face in a frame scaled by (sx, sy) (reduced copy -> source pixels)."""
        x, y, w, h = self.box
        lm = None if self.landmarks is None else tuple((px * sx, py * sy) for px, py in self.landmarks)
        return Face((x * sx, y * sy, w * sx, h * sy), self.score, lm)


class FaceDetector(Protocol):
    """What the crop stage needs from a backend."""

    name: ClassVar[str]
    #: Longer side (px) of the reduced copy the backend detects on; 0: the full-resolution image.
    side: ClassVar[int]

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        """Faces in *rgb* (HxWx3 uint8, upright); boxes in the pixels of *rgb*."""
        ...


class Backend(ABC):
    """Convenience base: class attributes describing what a backend needs."""

    name: ClassVar[str] = ""
    side: ClassVar[int] = 640
    #: Longer side of a first, cheaper look (``detect_at``) for photos whose face is plain at that
    #: size (the crop stage's ``coarse``); 0: the backend has none.
    coarse_side: ClassVar[int] = 0
    #: Top-level modules that must be importable.
    needs: ClassVar[tuple[str, ...]] = ()
    #: What to install when one of them is missing.
    install: ClassVar[str] = ""

    @abstractmethod
    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        """Faces in *rgb* (HxWx3 uint8, upright); boxes in the pixels of *rgb*."""

    def detect_closer(self, rgb: np.ndarray, item: Item, full: Callable[[], np.ndarray]) -> list[Face]:
        """``detect`` on *rgb*, a reduced copy of the upright image whose full-resolution pixels (RGB
        or grayscale) *full* returns; a backend may look again at parts of them (CenterFace's closer
        look). Boxes in pixels of *rgb*."""
        return self.detect(rgb, item)


#: Face detector backends by name.
DETECTORS = Registry("face detector")
register = DETECTORS.register


def missing(name: str) -> str:
    """Empty if backend *name* can be loaded, else the one-line message saying what to install.

    Only looks the modules up (``find_spec``): cheap enough for config validation, imports nothing.
    """
    cls = DETECTORS[name]
    absent = [m for m in cls.needs if importlib.util.find_spec(m) is None]
    return f"the {name} detector needs: {cls.install}" if absent else ""


def create(name: str) -> Backend:
    """Instantiate backend *name* (loads its model), or raise ConfigError naming the install line."""

    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; available: {', '.join(sorted(DETECTORS))}")
    why = missing(name)
    if why:
        raise ConfigError(why)
    try:
        backend: Backend = DETECTORS[name]()
        return backend
    except ImportError as e:  # present but broken (e.g. pkg_resources gone from setuptools>=81)
        raise ConfigError(f"the {name} detector could not load ({e}); try: {DETECTORS[name].install}") from None


def import_tensorflow() -> Any:
    """Import TensorFlow quietly and single-threaded (parallelism comes from worker processes)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised by an earlier import in this process: keep it
            pass
        tf.get_logger().setLevel("ERROR")
    return tf


def refit(face: Face, fit: tuple[float, float, float, float]) -> Face:
    """*face* with its box moved and scaled to another box convention: *fit* is (dx, dy, sw, sh),
    the centre shift in box widths/heights and the width/height factors."""
    dx, dy, sw, sh = fit
    x, y, w, h = face.box
    cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
    return Face((cx - w * sw / 2, cy - h * sh / 2, w * sw, h * sh), face.score, face.landmarks)


def nms(faces: list[Face], iou: float) -> list[Face]:
    """Greedy non-maximum suppression by score (ties: position) — deterministic."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: (-f.score, f.box)):
        if all(box_iou(f.box, k.box) < iou for k in kept):
            kept.append(f)
    return kept


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
