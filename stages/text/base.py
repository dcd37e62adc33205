"""The text-detector contract (TextRegion, TextDetector, TextReader) and the engine registry.

An engine is a small class registered by name. It declares the longer side of the reduced copy it
looks at (``side``) and, through ``missing``, what has to be installed for it. The ocr stage
decodes that copy, calls ``find_text``, filters the regions by score and size, and — when the
engine can also read (``read``) — has the surviving regions read so the report shows the words.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from stages.base import ConfigError, Registry
from stages.base import package_file as package_file  # re-exported for the backends


@dataclass(frozen=True, slots=True)
class TextRegion:
    """One piece of text found in an image.

    Attributes:
        box: x, y, w, h in pixels of the array given to ``find_text``.
        score: the engine's confidence in 0..1 (detector probability, or tesseract conf / 100).
        text: the words read in the region, or None when nothing read it.
    """

    box: tuple[int, int, int, int]
    score: float
    text: str | None = None

    def with_text(self, text: str | None) -> TextRegion:
        return replace(self, text=text)


class TextDetector(Protocol):
    """What the ocr stage needs from an engine."""

    name: ClassVar[str]
    #: Longer side (px) of the reduced copy the engine looks at.
    side: ClassVar[int]
    #: Default fraction of the image the counted regions must cover for a rejection.
    min_area: ClassVar[float]

    def find_text(self, rgb: np.ndarray) -> list[TextRegion]:
        """Text regions in *rgb* (HxWx3 uint8, upright); boxes in the pixels of *rgb*."""
        ...


@runtime_checkable
class TextReader(Protocol):
    """An engine that can also read the regions it found, from a sharper copy."""

    #: Longer side (px) of the copy regions are read from.
    read_side: int

    def read(self, rgb: np.ndarray, regions: list[TextRegion]) -> list[TextRegion]:
        """The same regions (boxes in pixels of *rgb*), in order, with ``text`` filled where read."""
        ...


class Engine:
    """Convenience base: class attributes describing an engine."""

    name: ClassVar[str] = ""
    side: ClassVar[int] = 480
    #: Default for the stage's ``min_area``: the fraction of the image text must cover to reject.
    min_area: ClassVar[float] = 0.01

    @classmethod
    def missing(cls, languages: str) -> str:
        """Empty when the engine can run, else one line saying what to install. Imports nothing heavy."""
        return ""

    def find_text(self, rgb: np.ndarray) -> list[TextRegion]:
        raise NotImplementedError


#: Text engines by name.
ENGINES = Registry("text engine")
register = ENGINES.register


def missing(name: str, languages: str = "eng") -> str:
    """Empty if engine *name* can run with *languages*, else what to install (one line)."""
    why: str = ENGINES[name].missing(languages)
    return why


def create(name: str, **options: object) -> Engine:
    """Instantiate engine *name* (loads its model once), or raise ConfigError naming the fix."""

    if name not in ENGINES:
        raise ConfigError(f"unknown text engine {name!r}; available: {', '.join(sorted(ENGINES))}")
    why = missing(name, str(options.get("languages", "eng")))
    if why:
        raise ConfigError(why)
    try:
        engine: Engine = ENGINES[name](**options)
        return engine
    except ImportError as e:  # installed but broken
        raise ConfigError(f"the {name} text engine could not load ({e})") from None


def absent_modules(*modules: str) -> list[str]:
    """The top-level modules among *modules* that cannot be imported (looked up, not imported)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def covered_fraction(boxes: list[tuple[int, int, int, int]], shape: tuple[int, ...]) -> float:
    """Fraction of an image of *shape* covered by the union of *boxes* (overlaps counted once)."""
    h, w = shape[:2]
    if not boxes or h == 0 or w == 0:
        return 0.0
    mask = np.zeros((h, w), np.bool_)
    for x, y, bw, bh in boxes:
        mask[max(0, y) : max(0, y + bh), max(0, x) : max(0, x + bw)] = True
    return float(mask.mean())
