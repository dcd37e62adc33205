"""ocr: reject images with text on them — memes, captions, subtitles, watermarks — and say what was found.

Where to look (``where``): ``image`` (default) looks at the whole source image, reduced to the
engine's ``side`` (320 px for the ppocr engines; from the full-resolution pixels when compress or
crop decoded them earlier in the run, else with a DCT-scaled decode). ``face`` looks at the face
crop handed on by the crop stage when crop ran earlier in the same run; without crop there is no crop to look at,
so the stage falls back to the whole image (logged once per worker, and ``text_where`` in the
metrics says ``image``).

The engine (``engine``, see stages/text) returns text regions with a score. Regions count when
their score is at least ``min_score`` and their height is at least ``min_px`` pixels *of the
image scaled to 480 px on its longer side* (so the same setting ignores the same small logos at
any resolution). The item is rejected with reason ``text`` when the counted regions cover at
least ``min_area`` of the looked-at image (by default the engine's own: 1% for the ppocr engines;
0 for tesseract, whose tight word boxes make one counted word enough). A rejected item's regions
are read from a sharper copy when the engine can read (``ppocr+tesseract``); the detail gives
the words read (truncated to 80 characters), then the region count and area.

Metrics: ``text_regions`` (counted regions), ``text_area`` (fraction covered, 0-1),
``text_words`` (words read), ``text_read`` (the words, at most 200 characters), ``text_boxes``
(up to 10 x, y, w, h boxes in pixels of the full-resolution image — or of the face crop),
``text_where`` (``image`` or ``face``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.base import ConfigError, Context, Item, Outcome, Stage, register
from stages.base import Params as StageParams
from stages.images import Decoded, to_rgb
from stages.text import ENGINES, TextReader, TextRegion, covered_fraction, create, missing

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "ppocr"
WHERE = ("image", "face")
#: ``min_px`` is measured on the image scaled to this longer side.
REF_SIDE = 480
DETAIL_CHARS = 80
READ_CHARS = 200
MAX_BOXES = 10


@dataclass(frozen=True)
class OcrParams(StageParams):
    engine: str = field(default=DEFAULT_ENGINE, metadata={
        "help": "text engine: ppocr (PP-OCRv4 detector) | tesseract | ppocr+tesseract (detector decides, tesseract reads the words)",
        "choices": tuple(sorted(ENGINES))})
    where: str = field(default="image", metadata={
        "help": "look at the whole image, or at the face crop (needs crop earlier in the run; else the whole image)",
        "choices": WHERE})
    min_area: float = field(default=-1.0, metadata={
        "help": "reject when text covers at least this fraction of the looked-at image "
                "(0-1; -1: the engine's own: 0.01 for ppocr engines, 0 for tesseract, where one counted word rejects)"})
    min_score: float = field(default=0.8, metadata={
        "help": "count a region from this engine score on (0-1; tesseract: word confidence / 100)"})
    min_px: int = field(default=4, metadata={
        "help": "count a region from this text height on, in px of the image scaled to 480 px on its longer side (ignores tiny logos)"})
    languages: str = field(default="eng+kor", metadata={"help": "tesseract languages joined by + (tesseract engines)"})
    min_chars: int = field(default=3, metadata={
        "help": "tesseract engine: a word counts only with at least this many letters or digits"})
    side: int = field(default=0, metadata={
        "help": "longer side (px) of the copy text is looked for in (0: the engine's own: 320 for the ppocr engines, 960 for tesseract)"})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"ocr.engine must be one of {', '.join(sorted(ENGINES))}, got {self.engine!r}")
        if self.where not in WHERE:
            raise ValueError(f"ocr.where must be one of {', '.join(WHERE)}, got {self.where!r}")
        if not (0.0 <= self.min_area <= 1.0 or self.min_area == -1.0):
            raise ValueError(f"ocr.min_area must be in 0-1 (or -1: the engine's own), got {self.min_area}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"ocr.min_score must be in 0-1, got {self.min_score}")
        if self.min_px < 0:
            raise ValueError(f"ocr.min_px must be >= 0, got {self.min_px}")
        if self.min_chars < 1:
            raise ValueError(f"ocr.min_chars must be >= 1, got {self.min_chars}")
        if self.side < 0 or 0 < self.side < 32:
            raise ValueError(f"ocr.side must be 0 or >= 32, got {self.side}")
        if not self.languages or not all(part.strip() for part in self.languages.split("+")):
            raise ValueError(f"ocr.languages must be tesseract languages joined by +, like eng+kor; got {self.languages!r}")
        if self.engine != DEFAULT_ENGINE and (why := missing(self.engine, self.languages)):
            # Asked for explicitly: fail at configuration time. The default is checked when a run
            # includes ocr (Ocr.__init__), so a run without ocr never needs its packages.
            raise ValueError(why)


_warned_no_view = False


@register
class Ocr(Stage[OcrParams]):
    name = "ocr"
    Params = OcrParams
    version = 2
    columns = ("text_regions", "text_area")

    def __init__(self, params: OcrParams | None = None) -> None:
        super().__init__(params)
        if params is not None:
            p: OcrParams = self.params
            if why := missing(p.engine, p.languages):

                raise ConfigError(why)

    def setup(self) -> None:
        p: OcrParams = self.params
        self.engine = create(p.engine, languages=p.languages, min_chars=p.min_chars)

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        p: OcrParams = self.params
        where = "face" if p.where == "face" and ctx.view is not None else "image"
        if p.where == "face" and where == "image":
            _warn_no_view()
        rgb, full_size = self._copy(image, ctx, where, p.side or self.engine.side)
        norm = REF_SIDE / max(rgb.shape[:2])
        regions = [r for r in self.engine.find_text(rgb) if r.score >= p.min_score and r.box[3] * norm >= p.min_px]
        area = covered_fraction([r.box for r in regions], rgb.shape)
        min_area = self.engine.min_area if p.min_area < 0 else p.min_area
        if not (regions and area >= min_area):
            return Outcome(item.key, metrics=text_metrics(regions, area, rgb.shape, full_size, where))
        if isinstance(self.engine, TextReader):  # words only for what the report shows: rejections
            regions = self._read(self.engine, image, ctx, where, rgb.shape, regions)
        metrics = text_metrics(regions, area, rgb.shape, full_size, where)
        return Outcome.rejected(item.key, "text", describe(regions, area, where), **metrics)

    @staticmethod
    def _copy(image: Decoded, ctx: Context, where: str, side: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The RGB copy to look at (longer side at most *side*) and the (w, h) of the full-resolution image."""
        if where == "face" and ctx.view is not None:
            return to_rgb(ctx.view.at_most(side)), ctx.view.size
        return to_rgb(image.at_most(side)), image.size

    def _read(self, reader: TextReader, image: Decoded, ctx: Context, where: str, shape: tuple[int, ...],
              regions: list[TextRegion]) -> list[TextRegion]:
        """*regions* with the words the reader finds in a sharper copy; boxes stay as they were."""
        sharp, _ = self._copy(image, ctx, where, reader.read_side)
        sx, sy = sharp.shape[1] / shape[1], sharp.shape[0] / shape[0]
        scaled = [TextRegion(scale_box(r.box, sx, sy), r.score) for r in regions]
        return [r.with_text(s.text) for r, s in zip(regions, reader.read(sharp, scaled), strict=True)]


def _warn_no_view() -> None:
    global _warned_no_view
    if not _warned_no_view:
        log.warning("ocr: where=face but no face crop was handed on (crop did not run before ocr); looking at the whole image")
        _warned_no_view = True


def scale_box(box: tuple[int, int, int, int], sx: float, sy: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return round(x * sx), round(y * sy), round(w * sx), round(h * sy)


def words_of(regions: list[TextRegion]) -> str:
    return " ".join(r.text for r in regions if r.text)


def text_metrics(regions: list[TextRegion], area: float, shape: tuple[int, ...], full_size: tuple[int, int], where: str) -> dict[str, Any]:
    """Deterministic per-item numbers; boxes mapped to full-resolution pixels."""
    sx, sy = full_size[0] / shape[1], full_size[1] / shape[0]
    words = words_of(regions)
    boxes = [list(scale_box(r.box, sx, sy)) for r in regions[:MAX_BOXES]]
    return {"text_regions": len(regions), "text_area": round(area, 4), "text_words": len(words.split()),
            "text_read": words[:READ_CHARS], "text_boxes": boxes, "text_where": where}


def describe(regions: list[TextRegion], area: float, where: str) -> str:
    """Rejection detail: the words read (truncated), then the region count and area."""
    of = "the face crop" if where == "face" else "the image"
    count = f"{len(regions)} region{'s' if len(regions) != 1 else ''}, {area * 100:.1f}% of {of}"
    words = " ".join(words_of(regions).split())
    if not words:
        return count
    if len(words) > DETAIL_CHARS:
        words = words[: DETAIL_CHARS - 1].rstrip() + "…"
    return f'"{words}" ({count})'
