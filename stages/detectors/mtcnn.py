"""mtcnn: the MTCNN cascade (P-, R-, O-Net) of the ``mtcnn`` 1.0 package, with five landmarks.

Its weights ship in the wheel (mtcnn/assets/weights/*.lz4). The package first looks for a file of
the same name in the current directory, so the packaged files are passed by absolute path.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.base import Item
from stages.detectors.base import LANDMARKS, Backend, Face, import_tensorflow, package_file, quiet_stderr, register


@register("mtcnn")
class Mtcnn(Backend):
    side: ClassVar[int] = 640
    needs: ClassVar[tuple[str, ...]] = ("mtcnn", "tensorflow")
    install: ClassVar[str] = "pip install mtcnn tensorflow"
    min_face: ClassVar[int] = 20  # px in the reduced copy (the package's default)

    def __init__(self) -> None:
        import_tensorflow()
        from mtcnn import MTCNN
        from mtcnn.stages import StageONet, StagePNet, StageRNet

        w = ("mtcnn", "assets", "weights")
        with quiet_stderr():  # TF reports the devices it probes on first use, through absl
            self.model = MTCNN(stages=[StagePNet(weights=package_file(*w, "pnet.lz4")),
                                       StageRNet(weights=package_file(*w, "rnet.lz4")),
                                       StageONet(weights=package_file(*w, "onet.lz4"))])
            self.model.detect_faces(np.zeros((48, 48, 3), np.uint8))

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        if min(rgb.shape[:2]) < 12:  # below P-Net's window: nothing to find (and the package errors)
            return []
        found = self.model.detect_faces(np.ascontiguousarray(rgb), box_format="xywh", min_face_size=self.min_face)
        faces = []
        for f in found:
            x, y, w, h = (float(v) for v in f["box"])
            if w <= 0 or h <= 0:
                continue
            kp = f.get("keypoints") or {}
            lm = tuple((float(kp[n][0]), float(kp[n][1])) for n in LANDMARKS) if all(n in kp for n in LANDMARKS) else None
            faces.append(Face((x, y, w, h), round(float(f["confidence"]), 4), lm))
        return faces
