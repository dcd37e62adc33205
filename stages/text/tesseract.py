"""tesseract (pytesseract) as a text finder, and as the reader behind ``ppocr+tesseract``.

One process-wide configuration: ``OMP_THREAD_LIMIT=1`` is put in the environment before the
first call (tesseract's OpenMP threads are 2-3x slower than one thread when workers already
fill the cores), the binary and the language files are checked once, and every call uses the
same flags. Each call starts a tesseract process, so the reader stacks all regions of an image
into one strip and reads it in a single call.

``tesseract`` runs page segmentation mode 11 (sparse text) on a grayscale copy: mode 3 (the
default) does not find white caption text drawn over photos. Mode 11 also emits junk tokens on
text-free photos; words count only with at least ``min_chars`` letters or digits, and the stage
then applies its minimum score (tesseract's word confidence / 100).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from typing import Any

import numpy as np

from stages.images import to_gray
from stages.text.base import Engine, TextRegion, absent_modules, register
from stages.text.ppocr import PPOCR

log = logging.getLogger(__name__)

APT = "apt-get install tesseract-ocr tesseract-ocr-kor"
FIND_CONFIG = "--oem 1 --psm 11"
READ_CONFIG = "--oem 1 --psm 6"
#: Words read inside detected regions are shown from this tesseract confidence on.
READ_CONF = 50.0
#: Height (px) each region is scaled to before reading; tesseract reads best around 30-40 px text.
READ_HEIGHT = 48
#: At most this many regions (largest first) are read per image: the report needs a sample.
READ_MAX = 12


def apt_package(lang: str) -> str:
    """Debian package holding a tesseract language (``chi_sim`` -> ``tesseract-ocr-chi-sim``)."""
    return "tesseract-ocr-" + lang.lower().replace("_", "-")


@functools.cache
def installed_languages() -> tuple[str, ...] | None:
    """Languages the tesseract binary has traineddata for; None when there is no binary."""
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(sorted(line.strip() for line in out.splitlines()[1:] if line.strip()))


def tesseract_missing(languages: str) -> str:
    """Empty when pytesseract, the binary and every language in *languages* are there."""
    if absent_modules("pytesseract"):
        return "the tesseract text engine needs pytesseract: pip install pytesseract"
    langs = installed_languages()
    if langs is None:
        return f"the tesseract binary is not installed (or not on PATH): {APT}"
    wanted = [x for x in languages.split("+") if x]
    if not wanted:
        return "ocr.languages is empty; give tesseract languages like eng+kor"
    absent = [x for x in wanted if x not in langs]
    if absent:
        return (f"tesseract has no traineddata for {', '.join(absent)} (installed: {', '.join(langs) or 'none'}): "
                f"apt-get install {' '.join(apt_package(x) for x in absent)}")
    return ""


@functools.lru_cache(maxsize=1)
def _pytesseract() -> Any:
    """pytesseract, imported once, after pinning tesseract to one thread for this process."""
    os.environ["OMP_THREAD_LIMIT"] = "1"
    import pytesseract

    return pytesseract


def image_to_words(gray: np.ndarray, languages: str, config: str) -> list[tuple[tuple[int, int, int, int], float, str]]:
    """(box, confidence 0-100, word) for every non-empty word tesseract reports."""
    pt = _pytesseract()
    d = pt.image_to_data(gray, lang=languages, config=config, output_type=pt.Output.DICT)
    out = []
    for text, conf, x, y, w, h in zip(d["text"], d["conf"], d["left"], d["top"], d["width"], d["height"], strict=True):
        word = str(text).strip()
        c = float(conf)
        if word and c >= 0:
            out.append(((int(x), int(y), int(w), int(h)), c, word))
    return out


def alnum(word: str) -> int:
    return sum(ch.isalnum() for ch in word)


@register("tesseract")
class Tesseract(Engine):
    """Words found and read by tesseract on a grayscale copy; one region per word.

    Args:
        languages: tesseract languages joined by ``+``.
        min_chars: a word counts only with at least this many letters or digits.
    """

    side = 960
    # Word boxes are tight and tesseract finds only some of the words: one counted word decides.
    min_area = 0.0

    def __init__(self, languages: str = "eng+kor", min_chars: int = 3, **_: Any) -> None:
        self.languages = languages
        self.min_chars = min_chars
        _pytesseract()

    @classmethod
    def missing(cls, languages: str) -> str:
        return tesseract_missing(languages)

    def find_text(self, rgb: np.ndarray) -> list[TextRegion]:
        words = image_to_words(to_gray(rgb), self.languages, FIND_CONFIG)
        return [TextRegion(box, round(conf / 100, 4), word) for box, conf, word in words if alnum(word) >= self.min_chars]


@register("ppocr+tesseract")
class PPOCRTesseract(Engine):
    """ppocr finds the regions (and decides, exactly as ``ppocr`` alone); tesseract reads them so
    reports can show the words, from a sharper 960 px copy."""

    side = PPOCR.side
    read_side = 960

    def __init__(self, languages: str = "eng+kor", min_chars: int = 3, **options: Any) -> None:
        self.detector = PPOCR(**options)
        self.languages = languages
        _pytesseract()

    @classmethod
    def missing(cls, languages: str) -> str:
        return PPOCR.missing(languages) or tesseract_missing(languages)

    def find_text(self, rgb: np.ndarray) -> list[TextRegion]:
        return self.detector.find_text(rgb)

    def read(self, rgb: np.ndarray, regions: list[TextRegion]) -> list[TextRegion]:
        if not regions:
            return regions
        order = sorted(range(len(regions)), key=lambda i: -regions[i].box[2] * regions[i].box[3])[:READ_MAX]
        strip, rows = _strip(to_gray(rgb), [regions[i].box for i in sorted(order)])
        try:
            words = image_to_words(strip, self.languages, READ_CONFIG)
        except (_pytesseract().TesseractError, RuntimeError, OSError) as e:
            # The detector already decided; a failed read costs the words, not the rejection.
            log.warning("tesseract could not read the text regions: %s", e)
            words = []
        found: dict[int, list[str]] = {}
        for (_, y, _, h), conf, word in words:
            if conf < READ_CONF or not alnum(word):
                continue
            mid = y + h / 2
            row = next((k for k, (top, bottom) in enumerate(rows) if top <= mid < bottom), None)
            if row is not None:
                found.setdefault(row, []).append(word)
        texts = {i: " ".join(found[k]) for k, i in enumerate(sorted(order)) if k in found}
        return [r.with_text(texts.get(i)) for i, r in enumerate(regions)]


def _strip(gray: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The boxes cut from *gray*, binarised dark-on-light, scaled to READ_HEIGHT and stacked.

    Returns the strip and, per box, the (top, bottom) rows it occupies.
    """
    import cv2

    gap = READ_HEIGHT // 2
    pieces = []
    for x, y, w, h in boxes:
        cut = gray[max(0, y) : y + h, max(0, x) : x + w]
        if cut.size == 0:
            cut = np.full((1, 1), 255, np.uint8)
        scale = READ_HEIGHT / cut.shape[0]
        cut = cv2.resize(cut, (max(1, round(cut.shape[1] * scale)), READ_HEIGHT), interpolation=cv2.INTER_CUBIC)
        _, bw = cv2.threshold(cut, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # Captions are often light letters with a dark outline over a busy photo: make the
        # majority class (the background) white, the letters black.
        if bw.mean() < 127:
            bw = 255 - bw
        pieces.append(bw)
    width = max(p.shape[1] for p in pieces) + 2 * gap
    strip = np.full((gap + sum(p.shape[0] + gap for p in pieces), width), 255, np.uint8)
    rows, top = [], gap
    for p in pieces:
        strip[top : top + p.shape[0], gap : gap + p.shape[1]] = p
        rows.append((top - gap // 2, top + p.shape[0] + gap // 2))
        top += p.shape[0] + gap
    return strip, rows
