"""annotations: the dataset's own face boxes instead of a detector.

AIHub items carry the boxes of annotators A, B and C (``annot_A_box`` ... as [x, y, w, h] in the
upright source image); the face is their consensus, the per-coordinate median of those present
(with two, their mean). Items without any box yield no face; the crop stage says why.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, register

BOX_KEYS = ("annot_A_box", "annot_B_box", "annot_C_box")


def _valid(b: Any) -> bool:
    return isinstance(b, Sequence) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) and b[2] > 0 and b[3] > 0


def consensus(meta: Any) -> tuple[float, float, float, float] | None:
    """Per-coordinate median of the annotators' boxes in *meta*, or None when there is none."""
    boxes = [b for k in BOX_KEYS if _valid(b := meta.get(k))]
    if not boxes:
        return None
    x, y, w, h = (float(statistics.median(c)) for c in zip(*boxes, strict=True))
    return x, y, w, h


@register("annotations")
class Annotations(Backend):
    side: ClassVar[int] = 0  # boxes are in full-resolution pixels: no reduced copy needed

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        box = consensus(item.meta)
        if box is None:
            return []
        h, w = rgb.shape[:2]
        # Clip to the image: annotators drag boxes past the border now and then.
        x0, y0 = max(0.0, box[0]), max(0.0, box[1])
        x1, y1 = min(float(w), box[0] + box[2]), min(float(h), box[1] + box[3])
        if x1 - x0 < 1 or y1 - y0 < 1:
            return []
        return [Face((x0, y0, x1 - x0, y1 - y0), 1.0)]
