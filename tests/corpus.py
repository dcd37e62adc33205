"""Builders for awkward inputs: every way a real collection breaks, as real files."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# exif_transpose's operation per orientation, and the operation that undoes it.
_UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def reference(w: int = 120, h: int = 80) -> Image.Image:
    """An asymmetric upright picture: red top-left block, blue bottom edge, green right edge."""
    a = np.full((h, w, 3), 200, np.uint8)
    a[: h // 3, : w // 3] = (220, 20, 20)
    a[-h // 6 :, :] = (20, 20, 220)
    a[:, -w // 8 :] = (20, 200, 20)
    return Image.fromarray(a)


def jpeg(im: Image.Image, quality: int = 95, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def oriented_jpeg(orientation: int, ref: Image.Image) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF tag that turns them back to *ref*."""
    stored = ref if orientation == 1 else ref.transpose(_UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(stored, exif=exif.tobytes())


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but carries none (a decompression-bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def zip_cp949(path: Path, members: dict[str, bytes]) -> None:
    """A zip whose names are CP949 bytes without the UTF-8 flag, as Korean Windows tools write."""
    raw_names = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i, (name, data) in enumerate(members.items()):
            raw = name.encode("cp949")
            placeholder = f"@{i:04d}@".ljust(len(raw), "_").encode()
            raw_names[placeholder] = raw
            zf.writestr(zipfile.ZipInfo(placeholder.decode(), date_time=(2020, 12, 8, 11, 57, 10)), data)
    # Same-length ASCII placeholders, swapped for the CP949 bytes: no offsets move, no flag is set.
    blob = path.read_bytes()
    for placeholder, raw in raw_names.items():
        blob = blob.replace(placeholder, raw)
    path.write_bytes(blob)


def zip_slip(path: Path, good: bytes) -> None:
    """A zip with one ordinary member and members that try to escape the archive."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("happy/ok.jpg", good)
        zf.writestr(zipfile.ZipInfo("../../evil.jpg"), good)
        zf.writestr(zipfile.ZipInfo("happy/../../../etc/evil2.jpg"), good)
        zf.writestr(zipfile.ZipInfo("/abs/evil3.jpg"), good)


def nasty_tree(root: Path, face: Path) -> dict[str, str]:
    """A folder-per-class tree holding every awkward input; returns key -> expected outcome.

    Expected outcome is a reason code, or "kept".
    """
    good = face.read_bytes()
    ref = reference()
    cls = root / "happy"
    cls.mkdir(parents=True)
    files: dict[str, tuple[bytes | None, str]] = {
        "zero.jpg": (b"", "decode_error"),
        "truncated.jpg": (good[: len(good) // 2], "decode_error"),
        "random.jpg": (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "decode_error"),
        "png_named.jpg": (encoded(ref, "PNG"), "kept"),
        "webp_named.jpg": (encoded(ref, "WEBP"), "kept"),
        "cmyk.jpg": (jpeg(ref.convert("CMYK")), "kept"),
        "gray.jpg": (jpeg(ref.convert("L")), "kept"),
        "sixteen.png": (encoded(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"), "kept"),
        "bomb.png": (png_header(30000, 30000), "too_large"),
        "기쁨 사진 (1) & co.jpg": (good, "kept"),
        "unicode_nfd_" + "\u1100\u1161" + ".jpg": (good, "kept"),
    }
    for k in range(1, 9):
        files[f"orient_{k}.jpg"] = (oriented_jpeg(k, ref), "kept")
    expected = {}
    for name, (data, outcome) in files.items():
        (cls / name).write_bytes(data or b"")
        expected["happy/" + _nfc(name)] = outcome
    # a symlink loop and a dangling link: unreadable
    os.symlink(cls / "loop_b.jpg", cls / "loop_a.jpg")
    os.symlink(cls / "loop_a.jpg", cls / "loop_b.jpg")
    os.symlink(cls / "nowhere.jpg", cls / "dangling.jpg")
    expected.update({"happy/loop_a.jpg": "unreadable", "happy/loop_b.jpg": "unreadable", "happy/dangling.jpg": "unreadable"})
    # permissions: unreadable for ordinary users, but root reads anything (then it is a correct output)
    locked = cls / "locked.jpg"
    shutil.copyfile(face, locked)
    locked.chmod(0)
    expected["happy/locked.jpg"] = "kept" if os.geteuid() == 0 else "unreadable"
    zip_slip(root / "zipped.zip", good)
    expected.update({"zipped/happy/ok.jpg": "kept", "zipped/../../evil.jpg": "unsafe_path",
                     "zipped/happy/../../../etc/evil2.jpg": "unsafe_path", "zipped/abs/evil3.jpg": "unsafe_path"})
    return expected


def _nfc(s: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFC", s)
