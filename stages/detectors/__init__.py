"""Face detector backends, registered by name (``--detector``); importing this package loads none
of their models or heavy libraries."""

from stages.detectors import annotations, blazeface, cascade, centerface, cvlib, haar, mtcnn, res10  # noqa: F401  (registers)
from stages.detectors.base import DETECTORS, Face, FaceDetector, create, missing

__all__ = ["DETECTORS", "Face", "FaceDetector", "create", "missing"]
