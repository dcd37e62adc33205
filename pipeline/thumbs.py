"""The report's thumbnails: a small JPEG of an image, with the size of the upright image it was made
from recorded in a JPEG comment, so that boxes in that image's pixels (crop's face, ocr's text) can
be drawn on it (pipeline.report)."""

from __future__ import annotations

import struct

from stages.images import Decoded, encode_jpeg

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
