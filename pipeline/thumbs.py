"""The report's thumbnails: a small JPEG of an image, with the size of the upright image it was made
from recorded in a JPEG comment, so that boxes in that image's pixels (crop's face, ocr's text) can
be drawn on it (pipeline.report). Made in the per-item pass for its rejections (``make_thumbnail``),
and by the report for the rest (``backfill``)."""

from __future__ import annotations

import functools
import struct
from pathlib import Path

from manifests.keys import key_to_relpath
from pipeline import executor
from pipeline.sources import read_item
from stages.base import Item
from stages.images import DEFAULT_MAX_PIXELS, Decoded, atomic_write, encode_jpeg

THUMB_SIDE = 160
THUMB_QUALITY = 70
_SIZE_NOTE = b"facesift source "


def thumbnail_jpeg(image: Decoded) -> bytes:
    """A small JPEG of *image* for the report. Its comment records the size of the upright image it
    was made from, so that boxes in that image's pixels (crop's face, ocr's text) can be drawn on it."""
    data = encode_jpeg(image.at_most(THUMB_SIDE), THUMB_QUALITY)
    w, h = image.size
    note = _SIZE_NOTE + f"{w}x{h}".encode()
    # A COM segment after SOI and the JFIF APP0 segment (which must come first): every JPEG reader skips it.
    at = 4 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe0" else 2
    return data[:at] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + data[at:]


def thumb_source_size(path: str) -> tuple[int, int] | None:
    """The (w, h) of the image a thumbnail was made from, as thumbnail_jpeg recorded it."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    at = 2
    while head[at : at + 1] == b"\xff" and head[at + 1 : at + 2] in (b"\xe0", b"\xfe") and at + 4 <= len(head):
        end = at + 2 + struct.unpack(">H", head[at + 2 : at + 4])[0]
        body = head[at + 4 : end]
        if head[at + 1] == 0xFE and body.startswith(_SIZE_NOTE):
            try:
                w, h = body[len(_SIZE_NOTE) :].decode().split("x")
                return int(w), int(h)
            except ValueError:
                return None
        at = end
    return None


def thumb_path(work: Path, key: str) -> Path:
    return work / "reports" / "thumbs" / key_to_relpath(key, ".jpg")


def make_thumbnail(image: Decoded, key: str, work: Path) -> bool:
    """Write the report's thumbnail of *image* (``thumbnail_jpeg``); False, never an exception, if it cannot."""
    try:
        atomic_write(thumb_path(work, key), thumbnail_jpeg(image))
        return True
    except Exception:  # undecodable or unwritable: the report shows a placeholder instead
        return False


def _thumb_chunk(task: tuple[list[tuple[str, Item]], Path]) -> int:
    jobs, work = task
    made = 0
    for key, item in jobs:
        made += make_thumbnail(Decoded(functools.partial(read_item, item), DEFAULT_MAX_PIXELS), key, work)
    return made


def backfill(work: Path, jobs: list[tuple[str, Item]], workers: int) -> int:
    """Thumbnails for dataset-step rejections, spread over *workers* processes."""
    if not jobs:
        return 0
    if workers <= 1 or len(jobs) < 64:
        return _thumb_chunk((jobs, work))
    n = min(len(jobs), workers * 4)
    tasks = [(jobs[i::n], work) for i in range(n)]
    return sum(executor.run_tasks(_thumb_chunk, tasks, backend="loky", workers=workers, sizes=[len(t[0]) for t in tasks],
                                  desc="thumbnails"))
