"""Text engines, registered by name (``--ocr-engine``); importing this package loads none of their
models or heavy libraries."""

from stages.text import ppocr, tesseract  # noqa: F401  (registers)
from stages.text.base import ENGINES, TextDetector, TextReader, TextRegion, covered_fraction, create, missing

__all__ = ["ENGINES", "TextDetector", "TextReader", "TextRegion", "covered_fraction", "create", "missing"]
