"""Proof of a near duplicate: local features and a geometric fit (dedup's verification step).

The keypoint sets it compares are made, packed and banked by ``stages.dupkeys``.

``verify`` matches two such sets (Hamming, Lowe's ratio test both ways), fits a similarity
transform (rotation, uniform scale, shift) with RANSAC, and calls the pair the same picture only
when all of these hold: enough inliers, a plausible fit (scale within ``MAX_SCALE``, rotation
within ``MAX_ROTATION`` degrees) and inliers spread over a good part of the smaller picture
(``overlap``: the area of their convex hull over the area of the picture content the two share).
Inlier count alone is no proof: two different photos with similar texture (the same meme
background, a crowd, a brick wall) reach dozens of consistent matches, but on a small patch.

Whole images with face boxes (through crop) are compared for what their faces cannot show: a copy
whose crop kept another face of a group photo. Their fit proves nothing about the faces unless
the faces' content matches too: two photos of one scene with another face in it (a person moved
in front of the same backdrop; faces pasted onto one background) share most of their keypoints.
So each face box the fit maps inside the other picture must hold ``FACE_INLIERS`` inliers, and
when the two kept faces are the same region (IoU >= ``SAME_FACE``) the face crops' own comparison
decides, not the frame's (another expression in the same pose and scene).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.dupkeys import DESC, N_FEATURES, Bank, Packed

#: Ratio test: best match distance below this fraction of the second best.
RATIO = 0.8
#: RANSAC reprojection threshold, px of the keypoints' frame (``dupkeys.SIDE``).
REPROJ = 5.0
MAX_SCALE = 6.0
MAX_ROTATION = 20.0
#: Whole-image fits (see the module doc): inliers needed inside each face box mapped into the
#: other picture, and the IoU from which two kept faces are the same region.
FACE_INLIERS = 2
SAME_FACE = 0.3
#: ``prove``: pairs screened in one distance array (64 x 96 x 96 int32: 2.4 MB).
SCREEN_BATCH = 64
#: ``around_faces``: matches count from this far outside a face box (in box sizes; the crop stage's
#: default margin, so outside what the face crops compared).
AROUND_MARGIN = 0.2


@dataclass(frozen=True)
class Evidence:
    """What one verification saw: matches after the ratio test, RANSAC inliers, the fit and the overlap."""

    matches: int = 0
    inliers: int = 0
    scale: float = 0.0
    rotation: float = 0.0
    overlap: float = 0.0
    frame_iou: float = 0.0   # the two frames' overlap under the fit (1: the same framing)
    #: whole images with face boxes: the fewest inliers in a face box the fit maps inside the other
    #: picture (0 when the two kept faces are the same region); -1: no face box to check
    faces: int = -1

    def proves(self, min_inliers: int, min_overlap: float) -> bool:
        return (self.inliers >= min_inliers and self.overlap >= min_overlap
                and 1 / MAX_SCALE <= self.scale <= MAX_SCALE and abs(self.rotation) <= MAX_ROTATION
                and (self.faces < 0 or self.faces >= FACE_INLIERS))


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


#: Per nearest distance f: the largest distance s that fails ``f < RATIO * s`` (the ratio test),
#: computed as ``matches`` computes it.
_RATIO_LIMIT = np.array([max(s for s in range(8 * DESC + 2) if not f < RATIO * s) for f in range(8 * DESC + 1)], np.int32)


def screen(bank: Bank, ia: np.ndarray, ib: np.ndarray, s: int, need: int) -> np.ndarray:
    """Per pair (ia[k], ib[k]) of *bank*'s images, on their keypoint set *s*: whether *need* matches
    pass the ratio test both ways (``matches``), as ``verify(bank.get(ia[k], s), bank.get(ib[k], s),
    need)`` needs before it fits; with *need* 0, whether both have keypoints to match. A pair that
    fails cannot be proved. Nearly every candidate pair fails, so a whole batch of pairs is screened
    in one distance array and one set of reductions: one by one, the calls' own cost would outweigh
    the counting. Pairs that share their first image and lie next to each other share its distance
    computation."""
    m = len(ia)
    starts = np.flatnonzero(np.r_[True, ia[1:] != ia[:-1]]) if m else np.zeros(0, np.int64)
    da, ca = bank.descs(ia[starts], s)
    db, cb = bank.descs(ib, s)
    ca = np.repeat(ca, np.diff(np.r_[starts, m]))  # per pair: its first image's keypoint count
    ok: np.ndarray = (ca >= 2) & (cb >= 2)
    if not need or not ok.any():
        return ok
    import faiss

    # (pair, b's keypoint, a's keypoint): one distance matrix per first image, over all its pairs.
    far = np.iinfo(np.int32).max
    d = np.empty((m, N_FEATURES, N_FEATURES), np.int32)
    for r, (lo, hi) in enumerate(zip(starts.tolist(), [*starts[1:].tolist(), m], strict=True)):
        faiss.hammings(faiss.swig_ptr(db[lo:hi]), faiss.swig_ptr(da[r]), (hi - lo) * N_FEATURES, N_FEATURES,  # type: ignore[attr-defined]
                       DESC, faiss.swig_ptr(d[lo:hi]))
    for j in np.flatnonzero((cb < N_FEATURES) | (ca < N_FEATURES)).tolist():
        d[j, cb[j]:] = far  # rows and columns past a set's count are not keypoints
        d[j, :, ca[j]:] = far
    # a's way, reduced over the middle axis row against row (SIMD). The ratio test holds where the
    # nearest is the only distance within _RATIO_LIMIT of it.
    near = d.min(axis=1)
    within = d <= _RATIO_LIMIT[np.minimum(near, 8 * DESC)][:, None, :]
    alone = within.sum(axis=1, dtype=np.uint8) == 1
    ok &= np.count_nonzero(alone, axis=1) >= need  # the way back can only remove matches
    on = np.flatnonzero(ok)
    if not len(on):
        return ok
    # The way back, for the pairs still in, on the rows (b's keypoints) a's way matched: a match
    # holds where its distance is the only one of its row within the ratio limit (so the row's
    # nearest, alone).
    pair, col = np.nonzero(alone[on])
    pair = on[pair]
    row = within[pair, :, col].argmax(axis=1)
    first = near[pair, col]
    back = (d[pair, row] <= _RATIO_LIMIT[first][:, None]).sum(axis=1) == 1
    ok[on] = np.bincount(pair[back], minlength=m)[on] >= need
    return ok


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
    faces = _faces(a, b, m, inv, pa[inl], pb[inl]) if a.box is not None and b.box is not None else -1
    return Evidence(len(ia), int(inl.sum()), scale, rotation, min(1.0, overlap), shared / union if union > 0 else 0.0, faces)


#: Empty evidence: what a pair that stops at the screen gets (one shared, frozen instance).
NOTHING = Evidence()


def prove(bank: Bank, a: np.ndarray, b: np.ndarray, sets: np.ndarray, ks: list[int], need: int,
          min_overlap: float) -> list[Evidence]:
    """Evidence for pairs ``(a[k], b[k])``, k in *ks* (sorted by ``a[k]``), of *bank*'s images, each
    verified on the sets that proposed it (``sets[k]``: bit ``1 << s`` for set s): the face crops'
    first, the whole images' where those do not prove it; a pair both proposed keeps the face crops'
    evidence unless the whole images' proves it. The pairs are screened in batches (``screen``); only
    those with *need* matches are read and verified one by one. The others get empty evidence: with
    fewer matches than *need*, no fit can prove them."""
    idx = np.asarray(ks, np.int64)
    ok = np.zeros((2, len(idx)), bool)
    for s in (0, 1):
        on = np.flatnonzero(sets[idx] & (1 << s))
        for lo in range(0, len(on), SCREEN_BATCH):
            at = on[lo:lo + SCREEN_BATCH]
            ok[s, at] = screen(bank, a[idx[at]], b[idx[at]], s, need)
    out = [NOTHING] * len(idx)
    first: tuple[int, list[Packed | None]] = (-1, [])
    for j in np.flatnonzero(ok[0] | ok[1]).tolist():
        k = int(idx[j])
        if first[0] != a[k]:  # pairs come sorted by their first image: read it once
            first = (int(a[k]), [bank.get(a[k], s) for s in (0, 1)])
        ev = verify(first[1][0], bank.get(b[k]), need) if ok[0, j] else NOTHING
        if sets[k] & 2 and not ev.proves(need, min_overlap):
            whole = verify(first[1][1], bank.get(b[k], 1), need) if ok[1, j] else NOTHING
            ev = whole if whole.proves(need, min_overlap) or not sets[k] & 1 else ev
        out[j] = ev
    return out


def around_faces(a: Packed | None, b: Packed | None) -> int:
    """Whole images with face boxes: matches outside *a*'s face (by ``AROUND_MARGIN``) that agree with
    putting the faces on each other (box centres and sizes; within ``3 * REPROJ`` px). A crop of a
    photo keeps what is around the face, however few keypoints it kept; a face pasted onto another
    picture does not."""
    if a is None or b is None or a.box is None or b.box is None or len(a.desc) < 2 or len(b.desc) < 2:
        return 0
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    k = float(np.sqrt(max((bx1 - bx0) * (by1 - by0), 1.0) / max((ax1 - ax0) * (ay1 - ay0), 1.0)))
    ia, ib = matches(a.desc, b.desc) or (np.zeros(0, np.int64), np.zeros(0, np.int64))
    pa, pb = a.xy[ia], b.xy[ib]
    moved = (pa - [(ax0 + ax1) / 2, (ay0 + ay1) / 2]) * k + [(bx0 + bx1) / 2, (by0 + by1) / 2]
    agree = np.hypot(*(moved - pb).T) <= 3 * REPROJ
    margin = AROUND_MARGIN * max(ax1 - ax0, ay1 - ay0)
    out = (pa[:, 0] < ax0 - margin) | (pa[:, 0] > ax1 + margin) | (pa[:, 1] < ay0 - margin) | (pa[:, 1] > ay1 + margin)
    return int(np.count_nonzero(agree & out))


def _quad(box: tuple[float, float, float, float], m: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    quad: np.ndarray = cv2.transform(np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float32), m)[0]
    return quad


def _inside(pts: np.ndarray, box: tuple[float, float, float, float]) -> int:
    x0, y0, x1, y1 = box
    return int(np.count_nonzero((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)))


def _faces(a: Packed, b: Packed, m: np.ndarray, inv: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> int:
    """``Evidence.faces`` of a fit *m* (a -> b) between whole images with face boxes; *pa*, *pb*: the inliers."""
    assert a.box is not None and b.box is not None
    qa = _quad(a.box, m)  # a's face in b's frame
    bx0, by0, bx1, by1 = b.box
    area_a, area_b = cv2.contourArea(qa), (bx1 - bx0) * (by1 - by0)
    both = _clip_area(qa - np.array([bx0, by0], np.float32), bx1 - bx0, by1 - by0)
    if both > SAME_FACE * (area_a + area_b - both):
        return 0  # the same face region: the face crops decide
    counts = []
    if area_a > 0 and _clip_area(qa, *b.size) >= 0.5 * area_a:
        counts.append(_inside(pa, a.box))
    qb = _quad(b.box, inv)
    area_qb = cv2.contourArea(qb)
    if area_qb > 0 and _clip_area(qb, *a.size) >= 0.5 * area_qb:
        counts.append(_inside(pb, b.box))
    return min(counts) if counts else -1


def _clip_area(quad: np.ndarray, w: float, h: float) -> float:
    """Area of a convex quadrilateral clipped to the rectangle [0, w] x [0, h]."""
    rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), rect)
    return float(area)
