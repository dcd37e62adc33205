"""haar: OpenCV's frontal-face Haar cascade (alt2), run on a reduced copy.

The classic call — ``detectMultiScale(full_res_gray, 1.2, 4)`` — scans every scale of a 12 MP
image: slow, and the many small windows on fine texture are where its false positives come from.
Here the cascade runs on a copy whose longer side is 640 px (a face worth cropping stays well above
the window), from a 24 px window up, with a finer scale step (1.1) that finds more true faces.
Histogram equalisation was tried and dropped: slower, and more false positives on textures. The
neighbour count (how many overlapping windows agreed) becomes the score.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, register
from stages.images import to_gray

CASCADE = "haarcascade_frontalface_alt2.xml"


@register("haar")
class Haar(Backend):
    side: ClassVar[int] = 640
    scale_factor: ClassVar[float] = 1.1
    min_neighbors: ClassVar[int] = 4
    min_window: ClassVar[int] = 24

    def __init__(self) -> None:
        import cv2

        path = os.path.join(cv2.data.haarcascades, CASCADE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ImportError(f"OpenCV's {CASCADE} could not be loaded from {path}")

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        boxes, neighbours = self.cascade.detectMultiScale2(
            to_gray(rgb), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_window, self.min_window))
        # More overlapping windows = more certain; n/(n+k) maps the count into 0..1, 0.5 at k.
        k = 2 * self.min_neighbors
        return [Face(tuple(float(v) for v in b), round(float(n) / (float(n) + k), 4))  # type: ignore[arg-type]
                for b, n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(neighbours).ravel(), strict=True)]
