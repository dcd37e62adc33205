"""Proof of a near duplicate: local features and a geometric fit (dedup's verification step).

Per item, ``features`` keeps ``N_FEATURES`` ORB keypoints spread over a grayscale copy whose
longer side is at most ``SIDE`` px, packed into bytes (the frame's size, coordinates as one byte
each in steps of ``SIDE / 256`` px, 32-byte descriptors): at most 3,268 B per image, stored as the
row's blob (binary, beside the part file's rows; never JSON text in the records). The dataset step
gathers them into a ``Bank``: fixed-width arrays, memory-mapped from a scratch file in the workspace.
SIDE is large enough that a crop saved at its own resolution keeps its pixel scale: a copy keeping
a fifth of a 500 px photo is compared at the scale of the photo itself.

``verify`` matches two such sets (Hamming, Lowe's ratio test both ways), fits a similarity
transform (rotation, uniform scale, shift) with RANSAC, and calls the pair the same picture only
when all of these hold: enough inliers, a plausible fit (scale within ``MAX_SCALE``, rotation
within ``MAX_ROTATION`` degrees) and inliers spread over a good part of the smaller picture
(``overlap``: the area of their convex hull over the area of the picture content the two share).
Inlier count alone is no proof: two different photos with similar texture (the same meme
background, a crowd, a brick wall) reach dozens of consistent matches, but on a small patch.
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
#: Ratio test: best match distance below this fraction of the second best.
RATIO = 0.8
#: RANSAC reprojection threshold, px of the SIDE frame.
REPROJ = 5.0
MAX_SCALE = 6.0
MAX_ROTATION = 20.0

_orb: cv2.ORB | None = None


def _detector() -> cv2.ORB:
    global _orb
    if _orb is None:
        # A small edge threshold and patch so that keypoints reach near the borders of small images.
        _orb = cv2.ORB_create(nfeatures=8 * N_FEATURES, scaleFactor=1.25, nlevels=8, edgeThreshold=15, patchSize=15, fastThreshold=10)
    return _orb


def features(gray: np.ndarray) -> bytes:
    """Packed keypoints of a grayscale uint8 image (b"" when it has none): see ``unpack``."""
    h, w = gray.shape[:2]
    if min(h, w) < 16:
        return b""
    s = SIDE / max(h, w)
    if s < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = gray.shape[:2]
    kps, desc = _detector().detectAndCompute(np.ascontiguousarray(gray), None)
    if desc is None or not len(kps):
        return b""
    keep = spread([k.pt for k in kps], [k.response for k in kps], w, h)
    desc = desc[keep]
    xy = np.clip(np.round(np.array([kps[i].pt for i in keep]) / STEP), 0, 255).astype(np.uint8)
    head = np.array([w, h], dtype=np.uint16)
    return bytes(head.tobytes() + xy.tobytes() + desc.astype(np.uint8).tobytes())


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


def unpack(b: bytes) -> Packed | None:
    if not b:
        return None
    n = (len(b) - 4) // (2 + DESC)
    w, h = np.frombuffer(b, np.uint16, 2).tolist()
    xy = np.frombuffer(b, np.uint8, 2 * n, 4).reshape(n, 2).astype(np.float32) * STEP
    desc = np.frombuffer(b, np.uint8, DESC * n, 4 + 2 * n).reshape(n, DESC)
    return Packed((w, h), xy, desc)


class Bank:
    """The packed keypoints of n images in fixed-width arrays (3,270 B an image, whatever the count):
    in memory, or memory-mapped from files under *folder* (the dataset step: nothing is held as
    Python objects, and ``release`` hands the pages read so far back to the kernel's cache, so that a
    pass over 500k images' keypoints does not stay resident in the process; ``get``, one image at
    random places, reads the files without the map)."""

    def __init__(self, n: int, folder: Path | None = None) -> None:
        shapes = {"desc": ((n, N_FEATURES, DESC), np.uint8), "xy": ((n, N_FEATURES, 2), np.uint8),
                  "count": ((n,), np.uint8), "size": ((n, 2), np.uint16)}
        self._maps: list[mmap.mmap] = []
        arrays = {k: self._mapped(folder / f"{k}.u8", s, t) if folder is not None and n else np.zeros(s, t)
                  for k, (s, t) in shapes.items()}
        self.desc, self.xy, self.count, self.size = arrays["desc"], arrays["xy"], arrays["count"], arrays["size"]
        # ``get`` reads one image's keypoints with pread, not through the map: read at random places, a
        # mapping maps whole page-cache folios (megabytes) per fault, and verification reads at random.
        self._fds = [os.open(folder / f"{k}.u8", os.O_RDONLY) for k in ("desc", "xy")] if folder is not None and n else []

    def _mapped(self, path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A zeroed array of *shape* on the file *path*, shared-mapped (a plain ndarray view: numpy's
        memmap subclass costs microseconds an index)."""
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with open(path, "w+b") as fh:
            fh.truncate(size)
            m = mmap.mmap(fh.fileno(), size)
        self._maps.append(m)
        return np.frombuffer(m, dtype).reshape(shape)

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the file and the page cache, and are
        read back on the next access); nothing for a bank in memory."""
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED)

    @classmethod
    def of(cls, blobs: list[bytes]) -> Bank:
        bank = cls(len(blobs))
        for i, b in enumerate(blobs):
            bank.put(i, b)
        return bank

    def __len__(self) -> int:
        return len(self.count)

    def put(self, i: int, b: bytes) -> None:
        p = unpack(b)
        if p is None:
            return
        k = min(len(p.desc), N_FEATURES)
        self.size[i] = p.size
        self.count[i] = k
        self.xy[i, :k] = np.round(p.xy[:k] / STEP).astype(np.uint8)
        self.desc[i, :k] = p.desc[:k]

    def get(self, i: int) -> Packed | None:
        i = int(i)  # a numpy int32 index would overflow in the file offset
        k = int(self.count[i])
        if not k:
            return None
        w, h = self.size[i].tolist()
        if not self._fds:
            return Packed((w, h), self.xy[i, :k].astype(np.float32) * STEP, np.asarray(self.desc[i, :k]))
        desc, xy = np.empty((k, DESC), np.uint8), np.empty((k, 2), np.uint8)
        os.preadv(self._fds[0], [desc.data], i * N_FEATURES * DESC)
        os.preadv(self._fds[1], [xy.data], i * N_FEATURES * 2)
        return Packed((w, h), xy.astype(np.float32) * STEP, desc)

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", ()):
            os.close(fd)


@dataclass(frozen=True)
class Evidence:
    """What one verification saw: matches after the ratio test, RANSAC inliers, the fit and the overlap."""

    matches: int = 0
    inliers: int = 0
    scale: float = 0.0
    rotation: float = 0.0
    overlap: float = 0.0
    frame_iou: float = 0.0   # the two frames' overlap under the fit (1: the same framing)

    def proves(self, min_inliers: int, min_overlap: float) -> bool:
        return (self.inliers >= min_inliers and self.overlap >= min_overlap
                and 1 / MAX_SCALE <= self.scale <= MAX_SCALE and abs(self.rotation) <= MAX_ROTATION)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (len(a) x len(b), int32) between two sets of 32-byte descriptors (faiss's
    popcount kernel: ~7 us for 96 x 96, a tenth of OpenCV's two-nearest search over the same)."""
    import faiss

    a, b = np.ascontiguousarray(a, np.uint8), np.ascontiguousarray(b, np.uint8)
    out = np.empty((len(a), len(b)), np.int32)
    faiss.hammings(faiss.swig_ptr(a), faiss.swig_ptr(b), len(a), len(b), DESC, faiss.swig_ptr(out))  # type: ignore[attr-defined]
    return out


def _two_nearest(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a distance matrix (>= 2 columns): the nearest column (the first of ties), its
    distance and the second smallest distance."""
    rows = np.arange(len(d))
    best = d.argmin(axis=1)
    first = d[rows, best]
    rest = d.copy()
    rest[rows, best] = np.iinfo(np.int32).max
    return best, first, rest.min(axis=1)


def matches(a: np.ndarray, b: np.ndarray, need: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices (ia, ib) of mutual best matches between two descriptor sets (>= 2 each) that pass the
    ratio test both ways; None when fewer than *need* pass it from *a* to *b* (the way back can
    only remove matches)."""
    d = distances(a, b)
    best, first, second = _two_nearest(d)
    one_way = first < RATIO * second
    if need and np.count_nonzero(one_way) < need:
        return None
    back, _, back_second = _two_nearest(d.T)
    ia = np.arange(len(a))
    ok = (back[best] == ia) & one_way & (first < RATIO * back_second[best])
    return ia[ok], best[ok]


def _hull_area(pts: np.ndarray) -> float:
    return float(cv2.contourArea(cv2.convexHull(pts.astype(np.float32)))) if len(pts) >= 3 else 0.0


def verify(a: Packed | None, b: Packed | None, need: int = 0) -> Evidence:
    """Evidence that *a* and *b* show the same picture (see the module doc). With *need*, a pair
    that cannot reach that many inliers stops early: empty evidence when fewer than *need* matches
    pass the first direction's ratio test, no fit with fewer than *need* matches."""
    if a is None or b is None or len(a.desc) < 2 or len(b.desc) < 2:
        return Evidence()
    found = matches(a.desc, b.desc, need)
    if found is None:
        return Evidence()
    ia, ib = found
    if len(ia) < max(3, need):
        return Evidence(len(ia))
    pa, pb = a.xy[ia], b.xy[ib]
    m, mask = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=REPROJ, maxIters=500, confidence=0.99)
    if m is None or mask is None:
        return Evidence(len(ia))
    inl = mask.ravel().astype(bool)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    rotation = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
    if scale <= 0:
        return Evidence(len(ia), int(inl.sum()))
    # The content both pictures share: b's frame mapped into a, clipped to a's frame.
    (wa, ha), (wb, hb) = a.size, b.size
    inv = cv2.invertAffineTransform(m)
    corners = cv2.transform(np.array([[[0, 0], [wb, 0], [wb, hb], [0, hb]]], np.float32), inv)[0]
    shared = _clip_area(corners, wa, ha)
    overlap = _hull_area(pa[inl]) / shared if shared > 0 else 0.0
    union = wa * ha + wb * hb / scale ** 2 - shared
    return Evidence(len(ia), int(inl.sum()), scale, rotation, min(1.0, overlap), shared / union if union > 0 else 0.0)


def _clip_area(quad: np.ndarray, w: float, h: float) -> float:
    """Area of a convex quadrilateral clipped to the rectangle [0, w] x [0, h]."""
    rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), rect)
    return float(area)
