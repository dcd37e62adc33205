"""Stages: one module per stage. Importing this package registers every stage (explicitly)."""

from stages import compress, crop, dedup, ocr, quality, split, train  # noqa: F401  (registers)
from stages.base import ORDER, STAGES, Item, Outcome, Stage

__all__ = ["ORDER", "STAGES", "Item", "Outcome", "Stage"]
