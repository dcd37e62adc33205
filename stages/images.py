"""The only place that reads, decodes, reduces, resizes and encodes images.

Bytes in (a file or a zip member, never ``cv2.imread(path)``, which fails on non-ASCII paths), EXIF
orientation applied first, reduced copies (from JPEG DCT scaling, or from full-resolution pixels a
run decodes anyway), one area-averaging resize, the model-input resize, a
decompression-bomb guard, atomic writes. Every step adds its time to ``CLOCK``, which the run's
profile (pipeline.profile) reads.
"""

from __future__ import annotations

import functools
import io
import time
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from manifests import store
from manifests.schema import check_reason

DEFAULT_MAX_PIXELS = 100_000_000

#: Seconds per image step in this process (read, decode, reduce, encode, write).
CLOCK: Counter[str] = Counter()


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Add the time of the block to ``CLOCK[step]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        CLOCK[step] += time.perf_counter() - t0  # type: ignore[assignment]  # seconds: Counter's stubs say int


@functools.lru_cache(maxsize=8)
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def read_bytes(path: str, member: str = "") -> bytes:
    """Bytes of a file or a zip member (open zip files are cached per process)."""
    if not member:
        with open(path, "rb") as f:
            return f.read()
    try:
        return _open_zip(path).read(member)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, KeyError, EOFError, zlib.error) as e:
        raise OSError(f"zip member {member!r}: {e}") from None

# EXIF orientations 5-8 swap width and height; each maps to the transpose that makes it upright.
_SWAPS = {5, 6, 7, 8}
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class DecodeError(Exception):
    """An image that cannot be used; ``reason`` is a code from manifests.schema.REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = check_reason(reason)
        self.detail = detail


class Decoded:
    """One image, decoded at most once, upright, with cached reduced copies.

    Where reduced copies come from is a setting, never a matter of what happened to be decoded
    before (a resumed run that skips a stage must see the same pixels): with ``reduce_from_full``
    false, a JPEG's copy is a fresh DCT-scaled decode (cheap when nothing needs the full image);
    with it true, the copy is cut down from the full-resolution pixels (cheap when a stage of the
    run decodes them anyway: a resize costs a fraction of a second decode). The shard task sets
    it per stage from the stages up to that one (see pipeline.shard).

    Args:
        read: returns the encoded bytes (called once, lazily).
        max_pixels: images with more pixels are refused as ``too_large`` before decoding.
    """

    reduce_from_full = False

    def __init__(self, read: Callable[[], bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._read = read
        self.max_pixels = max_pixels
        self._data: bytes | None = None
        self._header: Image.Image | None = None
        self._pil: Image.Image | None = None
        self._full: np.ndarray | None = None
        self._reduced: dict[tuple[int, bool], np.ndarray] = {}
        self._blocks: dict[int, np.ndarray] = {}
        self._no_direct = False

    @classmethod
    def from_bytes(cls, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
        return cls(lambda: data, max_pixels)

    @property
    def data(self) -> bytes:
        if self._data is None:
            try:
                with timed("read"):
                    self._data = self._read()
            except OSError as e:
                raise DecodeError("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
            if not self._data:
                raise DecodeError("decode_error", "empty file (0 bytes)")
        return self._data

    def _open(self) -> Image.Image:
        """A fresh lazily-loading PIL image (header parsed, pixels not yet decoded)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(self.data))
        except Image.DecompressionBombError as e:
            raise DecodeError("too_large", str(e)) from None
        except UnidentifiedImageError:
            raise DecodeError("decode_error", f"not a recognised image format ({len(self.data)} bytes)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise DecodeError("decode_error", f"bad image header: {e}") from None
        w, h = im.size
        if w * h > self.max_pixels:
            raise DecodeError("too_large", f"{w}x{h} = {w * h / 1e6:.0f} MP > limit {self.max_pixels / 1e6:.0f} MP")
        if w == 0 or h == 0:
            raise DecodeError("decode_error", f"empty image {w}x{h}")
        return im

    @property
    def header(self) -> Image.Image:
        if self._header is None:
            self._header = self._open()
        return self._header

    @property
    def format(self) -> str:
        return self.header.format or ""

    @property
    def orientation(self) -> int:
        try:
            return int(self.header.getexif().get(0x0112, 1) or 1)
        except Exception:  # a broken EXIF block must not cost the image
            return 1

    @property
    def size(self) -> tuple[int, int]:
        """Upright (EXIF-applied) width and height, from the header alone."""
        w, h = self.header.size
        return (h, w) if self.orientation in _SWAPS else (w, h)

    def pil(self) -> Image.Image:
        """Full-resolution upright image as PIL, mode ``L`` or ``RGB``."""
        if self._pil is None:
            if self._direct():
                full = self.full()
                with timed("decode"):
                    self._pil = Image.fromarray(full)
            else:
                im, orientation = self._open(), self.orientation
                with timed("decode"):
                    self._pil = self._load(im, orientation)
        return self._pil

    def full(self) -> np.ndarray:
        """Full-resolution upright pixels: HxW (grayscale) or HxWx3 RGB, uint8."""
        if self._full is None:
            if self._direct():
                with timed("decode"):
                    self._full = self._direct_decode()
                self._no_direct = self._full is None
            if self._full is None:
                pil = self.pil()
                with timed("decode"):
                    self._full = np.asarray(pil)
        return self._full

    def _direct(self) -> bool:
        """Whether the pixels can be decoded straight into an array (simplejpeg, the same pixels as
        Pillow's, without Pillow's copy): a complete RGB or gray JPEG; other files go through Pillow."""
        return (not self._no_direct and self._pil is None and self.format == "JPEG" and self.header.mode in ("RGB", "L")
                and self.data[-4096:].rstrip(b"\0").endswith(b"\xff\xd9"))

    def _direct_decode(self) -> np.ndarray | None:
        """RGB (or gray) straight from libjpeg-turbo: no BGR->RGB pass over the pixels, as OpenCV's
        decode needs (about 25% less CPU than ``cv2.imdecode`` and ``cvtColor`` at 12 MP)."""
        import cv2
        import simplejpeg

        try:
            a = simplejpeg.decode_jpeg(self.data, colorspace="RGB" if self.header.mode == "RGB" else "GRAY")
        except ValueError:
            return None
        if a.shape[:2] != self.header.size[::-1]:
            return None  # Pillow decides what is wrong with it
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        o = self.orientation
        if o in (5, 7):
            a = cv2.transpose(a)
        flip = {2: 1, 4: 0, 7: -1}.get(o)
        turn = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_CLOCKWISE, 8: cv2.ROTATE_90_COUNTERCLOCKWISE}.get(o)
        if flip is not None:
            a = cv2.flip(a, flip)
        elif turn is not None:
            a = cv2.rotate(a, turn)
        upright: np.ndarray = a
        return upright

    def at_most(self, side: int) -> np.ndarray:
        """Upright pixels with the longer side at most *side* (see the class doc for their source)."""
        w, h = self.size
        if max(w, h) <= side:
            return self.full()
        key = (side, self.reduce_from_full or self.format != "JPEG")
        if key not in self._reduced:
            if key[1]:
                full = self.full()
                with timed("reduce"):
                    self._reduced[key] = shrink(full, side, self._blocks)
            else:
                self._reduced[key] = self._dct_reduce(side)
        return self._reduced[key]

    def _dct_reduce(self, side: int) -> np.ndarray:
        """A JPEG's reduced copy from a fresh DCT-scaled decode (1/2..1/8), then an area resize."""
        w, h = self.size
        scale = side / max(w, h)
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        im = self._open()
        raw = (th, tw) if self.orientation in _SWAPS else (tw, th)
        with timed("reduce"):
            im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", raw)
            src = np.asarray(self._load(im, self.orientation))
            return src if src.shape[:2] == (th, tw) else _area(src, tw, th)

    @staticmethod
    def _load(im: Image.Image, orientation: int) -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
            # Transposing by hand: ImageOps.exif_transpose copies the whole image even when upright.
            im = to_l_or_rgb(im)
            return im.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else im
        except DecodeError:
            raise
        except (OSError, SyntaxError, ValueError, MemoryError) as e:
            raise DecodeError("decode_error", f"{type(e).__name__}: {e}") from None


#: The reduced copies of a handed-on ``View`` up to this side are all made from one copy at this side
#: (the largest any stage after crop asks for: dedup's keypoints).
VIEW_BASE = 512


class View:
    """The image one stage hands to the stages after it in the same pass (crop's face), with its
    reduced copies made once and shared: text search, scores, hashes and keypoints each ask for one.

    Copies up to ``VIEW_BASE`` px are reduced from one ``VIEW_BASE`` px copy (so the 256 px copy
    quality and dedup share halves it exactly), larger ones from the pixels; a pure function of the
    pixels and the side, whatever was asked before.
    """

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self._copies: dict[int, np.ndarray] = {}
        self._blocks: dict[int, np.ndarray] = {}

    @property
    def size(self) -> tuple[int, int]:
        """Width and height."""
        h, w = self.pixels.shape[:2]
        return w, h

    def at_most(self, side: int) -> np.ndarray:
        """The pixels with the longer side at most *side* (area averaging; never enlarged)."""
        if max(self.size) <= side:
            return self.pixels
        got = self._copies.get(side)
        if got is None:
            base = self.at_most(VIEW_BASE) if side < VIEW_BASE else self.pixels
            with timed("reduce"):
                got = self._copies[side] = shrink(base, side, self._blocks if base is self.pixels else None)
        return got


#: Reductions first halve down to about this longer side (or the asked side, when larger): every
#: copy of one image up to 640 px (detection, text search, hashes, thumbnails) shares the halvings.
BLOCK_SIDE = 640


def shrink(a: np.ndarray, side: int, blocks: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """*a* (HxW or HxWx3 uint8) with its longer side at most *side*, by area averaging; never enlarged.

    Halving by 2x2 averages is OpenCV's SIMD path (2.7 ms for 12 MP RGB against 20-25 ms for a 6x6
    block or fractional area resize), so large reductions halve down to ``BLOCK_SIDE`` px or more
    (an odd last row or column is left out of each halving), cached in *blocks* by their factor k,
    then area-resize the small result. A pure function of *a* and *side*.
    """
    h, w = a.shape[:2]
    if max(h, w) <= side:
        return a
    s = side / max(h, w)
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    most = min(w // tw, h // th, max(1, max(h, w) // BLOCK_SIDE))
    k = 1
    while 2 * k <= most:
        k *= 2
        half = blocks.get(k) if blocks is not None else None
        if half is None:
            hh, ww = a.shape[:2]
            half = _area(a[: hh - hh % 2, : ww - ww % 2], ww // 2, hh // 2)
            if blocks is not None:
                blocks[k] = half
        a = half
    return a if a.shape[:2] == (th, tw) else _area(a, tw, th)


def _area(a: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    out: np.ndarray = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
    return out


def to_l_or_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to ``L`` or ``RGB``: 16-bit scaled, alpha over white, CMYK converted."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        hi = 65535 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255
        return Image.fromarray((a.astype(np.float32) * (255 / hi)).clip(0, 255).astype(np.uint8), "L")
    if mode == "1":
        return im.convert("L")
    if "A" in mode or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def to_rgb(a: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 uint8 -> HxWx3 RGB."""
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def to_gray(a: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 RGB uint8 -> HxW grayscale."""
    import cv2

    return a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)


def encode_jpeg(a: np.ndarray, quality: int) -> bytes:
    """JPEG bytes (4:2:0, baseline, accurate DCT) of an L/RGB array, by libjpeg-turbo through
    simplejpeg: straight from the array, about half the time of handing it to Pillow (which copies an
    RGB array into its own 4-byte pixels first) at the same quality (PSNR equal to 0.01 dB at q40,
    0.2% more bytes)."""
    import simplejpeg

    gray = a.ndim == 2 or a.shape[2] == 1
    a = np.ascontiguousarray(a.reshape(*a.shape[:2], 1) if gray else a)
    with timed("encode"):
        data: bytes = simplejpeg.encode_jpeg(a, quality=quality, colorspace="GRAY" if gray else "RGB",
                                             colorsubsampling="Gray" if gray else "420", fastdct=False)
    return data


def atomic_write(path: Path, data: bytes) -> None:
    """``manifests.store.atomic_write``, its time counted as "write"."""
    with timed("write"):
        store.atomic_write(path, data)


def encode_png(a: np.ndarray) -> bytes:
    """PNG bytes of an L/RGB array (lossless; for images that have no file of their own)."""
    buf = io.BytesIO()
    with timed("encode"):
        Image.fromarray(a).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def model_input(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Pixels (HxW gray or HxWx3 RGB uint8) as a model input of *shape* (h, w, c), uint8: gray or
    RGB as *c* asks, area-averaged when shrinking, bilinear when enlarging. Training and ``predict``
    both use it, so a model sees at prediction the pixels it was trained on."""
    import cv2

    h, w, c = shape
    a = to_gray(a) if c == 1 else to_rgb(a)
    if a.shape[:2] != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if a.shape[0] > h or a.shape[1] > w else cv2.INTER_LINEAR)
    return a.reshape(h, w, c)

