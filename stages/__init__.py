"""Stages: one module per stage. Importing this package registers every stage."""

from stages import compress  # noqa: F401  (registers)
from stages.base import ORDER, STAGES, Item, Outcome, Stage

__all__ = ["ORDER", "STAGES", "Item", "Outcome", "Stage"]
