"""The keypoint sets dedup's verification compares (``stages.dupverify``): made per item, packed, banked.

Per item, ``features`` keeps ``N_FEATURES`` ORB keypoints spread over a grayscale copy whose
longer side is at most ``SIDE`` px, packed into bytes (a 10-byte head: the frame's size, the
keypoint count and an optional face box; coordinates as one byte each in steps of ``SIDE / 256``
px; 32-byte descriptors): at most 3,274 B a set. A row's blob (binary, beside the part file's rows;
never JSON text in the records) holds one set, or two through crop: the face crop's, then the whole
image's with the face box in it (``unpack_all``). The dataset step gathers them into a ``Bank``:
fixed-width arrays, memory-mapped from a scratch file in the workspace.
SIDE is large enough that a crop saved at its own resolution keeps its pixel scale: a copy keeping
a fifth of a 500 px photo is compared at the scale of the photo itself.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Longer side of the grayscale copy keypoints are found on (coordinates then fit in a byte).
SIDE = 512
#: Coordinates are stored as bytes: pixels of the SIDE frame divided by this.
STEP = SIDE / 256
N_FEATURES = 96
#: Keypoints are kept spread over a GRID x GRID grid (see ``spread``).
GRID = 6
DESC = 32
#: A packed set's head: frame width, height and keypoint count (uint16), face box (4 bytes, STEP units).
HEAD = 10
#: A set without keypoints (it keeps the place of a face crop that has none, before the whole image's set).
EMPTY = bytes(HEAD)

_orb: cv2.ORB | None = None


def _detector() -> cv2.ORB:
    global _orb
    if _orb is None:
        # A small edge threshold and patch so that keypoints reach near the borders of small images.
        _orb = cv2.ORB_create(nfeatures=8 * N_FEATURES, scaleFactor=1.25, nlevels=8, edgeThreshold=15, patchSize=15, fastThreshold=10)
    return _orb


def features(gray: np.ndarray, box: tuple[float, float, float, float] | None = None) -> bytes:
    """Packed keypoints of a grayscale uint8 image (b"" when it has none): see ``unpack``. *box*:
    the face in it (x, y, w, h in *gray*'s pixels), kept in the head."""
    h, w = gray.shape[:2]
    if min(h, w) < 16:
        return b""
    s = min(1.0, SIDE / max(h, w))
    corners = b"\0\0\0\0"
    if box is not None:
        x0, y0, bw, bh = box
        corners = bytes(np.clip(np.round(np.array([x0, y0, x0 + bw, y0 + bh]) * s / STEP), 0, 255).astype(np.uint8))
    if s < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = gray.shape[:2]
    kps, desc = _detector().detectAndCompute(np.ascontiguousarray(gray), None)
    if desc is None or not len(kps):
        return b""
    keep = spread([k.pt for k in kps], [k.response for k in kps], w, h)
    desc = desc[keep]
    xy = np.clip(np.round(np.array([kps[i].pt for i in keep]) / STEP), 0, 255).astype(np.uint8)
    head = np.array([w, h, len(keep)], dtype=np.uint16)
    return bytes(head.tobytes() + corners + xy.tobytes() + desc.astype(np.uint8).tobytes())


def spread(pts: list[tuple[float, float]], response: list[float], w: int, h: int) -> np.ndarray:
    """Indices of at most N_FEATURES keypoints spread over the image: the strongest of each cell of
    a GRID x GRID grid first, then the second strongest of each, and so on (strongest first)."""
    p = np.asarray(pts, np.float32).reshape(-1, 2)
    r = np.asarray(response, np.float32)
    cell = np.minimum((p[:, 1] * GRID / h).astype(int), GRID - 1) * GRID + np.minimum((p[:, 0] * GRID / w).astype(int), GRID - 1)
    order = np.lexsort((-r, cell))
    start = np.searchsorted(cell[order], np.arange(GRID * GRID))
    rank = np.empty(len(r), np.int64)
    rank[order] = np.arange(len(r)) - start[cell[order]]
    return np.lexsort((-r, rank))[:N_FEATURES]


@dataclass(frozen=True)
class Packed:
    size: tuple[int, int]   # (w, h) of the SIDE frame (uint16 in the packed string)
    xy: np.ndarray          # (n, 2) float32
    desc: np.ndarray        # (n, 32) uint8
    box: tuple[float, float, float, float] | None = None   # the face (x0, y0, x1, y1) in the frame, if given


def _box(corners: bytes | np.ndarray) -> tuple[float, float, float, float] | None:
    x0, y0, x1, y1 = (v * STEP for v in bytes(corners))
    return None if not (x0 or y0 or x1 or y1) else (x0, y0, x1, y1)


def unpack_all(b: bytes) -> list[Packed]:
    """Every set packed in *b* (``features`` outputs one after another); a set cut short ends them."""
    out, at = [], 0
    while at + HEAD <= len(b):
        w, h, n = np.frombuffer(b, np.uint16, 3, at).tolist()
        if at + HEAD + (2 + DESC) * n > len(b):
            break
        xy = np.frombuffer(b, np.uint8, 2 * n, at + HEAD).reshape(n, 2).astype(np.float32) * STEP
        desc = np.frombuffer(b, np.uint8, DESC * n, at + HEAD + 2 * n).reshape(n, DESC)
        out.append(Packed((w, h), xy, desc, _box(b[at + 6:at + HEAD])))
        at += HEAD + (2 + DESC) * n
    return out


def unpack(b: bytes) -> Packed | None:
    """The first set packed in *b* (the face crop's, through crop), None when there is none."""
    sets = unpack_all(b)
    return sets[0] if sets else None


class Bank:
    """The packed keypoints of n images in fixed-width arrays (3,274 B a set, whatever the count; row
    ``s * n + i`` holds image i's set s, with ``sets`` sets an image: 2 through crop, the face's and
    the whole image's): in memory, or memory-mapped from files under *folder* (the dataset step: nothing is held as
    Python objects, and ``release`` hands the pages read so far back to the kernel's cache, so that a
    pass over 500k images' keypoints does not stay resident in the process; ``get``, one image at
    random places, reads the files without the map)."""

    def __init__(self, n: int, folder: Path | None = None, sets: int = 1, *, existing: bool = False) -> None:
        """An empty bank (zeroed files under *folder*), or with *existing* the one already there, read-only."""
        self.n, self.sets, self.folder = n, sets, folder
        rows = n * sets
        shapes = {"desc": ((rows, N_FEATURES, DESC), np.uint8), "xy": ((rows, N_FEATURES, 2), np.uint8),
                  "count": ((rows,), np.uint8), "size": ((rows, 2), np.uint16), "box": ((rows, 4), np.uint8)}
        self._maps: list[mmap.mmap] = []
        arrays = {k: self._mapped(folder / f"{k}.u8", s, t, existing) if folder is not None and rows else np.zeros(s, t)
                  for k, (s, t) in shapes.items()}
        self.desc, self.xy, self.count, self.size = arrays["desc"], arrays["xy"], arrays["count"], arrays["size"]
        self.box = arrays["box"]
        # ``get`` reads one image's keypoints with pread, not through the map: read at random places, a
        # mapping maps whole page-cache folios (megabytes) per fault, and verification reads at random.
        self._fds = [os.open(folder / f"{k}.u8", os.O_RDONLY) for k in ("desc", "xy")] if folder is not None and rows else []

    def _mapped(self, path: Path, shape: tuple[int, ...], dtype: type, existing: bool = False) -> np.ndarray:
        """A zeroed array of *shape* on the file *path*, shared-mapped (a plain ndarray view: numpy's
        memmap subclass costs microseconds an index); *existing*: the file's array, read-only."""
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with open(path, "rb" if existing else "w+b") as fh:
            if not existing:
                fh.truncate(size)
            m = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ if existing else mmap.ACCESS_WRITE)
        self._maps.append(m)
        return np.frombuffer(m, dtype).reshape(shape)

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the file and the page cache, and are
        read back on the next access); nothing for a bank in memory."""
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED)

    @classmethod
    def of(cls, blobs: list[bytes]) -> Bank:
        bank = cls(len(blobs), sets=max((len(unpack_all(b)) for b in blobs), default=1) or 1)
        for i, b in enumerate(blobs):
            bank.put(i, b)
        return bank

    def __len__(self) -> int:
        return self.n

    def put(self, i: int, b: bytes) -> None:
        """Image *i*'s sets from its packed bytes, copied as they are packed (``unpack_all``'s layout)."""
        at = 0
        for s in range(self.sets):
            if at + HEAD > len(b):
                break
            w, h, n = np.frombuffer(b, np.uint16, 3, at).tolist()
            if at + HEAD + (2 + DESC) * n > len(b):
                break
            r, k = s * self.n + i, min(n, N_FEATURES)
            self.size[r] = w, h
            self.count[r] = k
            self.box[r] = np.frombuffer(b, np.uint8, 4, at + 6)
            self.xy[r, :k] = np.frombuffer(b, np.uint8, 2 * k, at + HEAD).reshape(k, 2)
            self.desc[r, :k] = np.frombuffer(b, np.uint8, DESC * k, at + HEAD + 2 * n).reshape(k, DESC)
            at += HEAD + (2 + DESC) * n

    def get(self, i: int, s: int = 0) -> Packed | None:
        """Image *i*'s set *s* (None when it has none)."""
        r = s * self.n + int(i)  # a numpy int32 index would overflow in the file offset
        k = int(self.count[r]) if s < self.sets else 0
        if not k:
            return None
        w, h = self.size[r].tolist()
        box = _box(self.box[r])
        if not self._fds:
            return Packed((w, h), self.xy[r, :k].astype(np.float32) * STEP, np.asarray(self.desc[r, :k]), box)
        desc, xy = np.empty((k, DESC), np.uint8), np.empty((k, 2), np.uint8)
        os.preadv(self._fds[0], [desc.data], r * N_FEATURES * DESC)
        os.preadv(self._fds[1], [xy.data], r * N_FEATURES * 2)
        return Packed((w, h), xy.astype(np.float32) * STEP, desc, box)

    def descs(self, idx: np.ndarray, s: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The descriptors of images *idx*' set *s*, (m, N_FEATURES, DESC) at full width (rows past
        an image's count are not its keypoints), and their counts."""
        if s >= self.sets:
            return np.zeros((len(idx), N_FEATURES, DESC), np.uint8), np.zeros(len(idx), np.uint8)
        rows = s * self.n + np.asarray(idx, np.int64)
        if not self._fds:
            return self.desc[rows], self.count[rows]
        out = np.empty((len(rows), N_FEATURES, DESC), np.uint8)
        for j, r in enumerate(rows.tolist()):
            os.preadv(self._fds[0], [out[j].data], r * N_FEATURES * DESC)
        return out, self.count[rows]

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", ()):
            os.close(fd)
