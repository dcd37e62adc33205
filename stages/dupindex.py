"""Candidates by shared keypoints: images whose ORB descriptors meet in hash buckets.

A copy cropped to a fifth of the photo, padded or cut out has another pHash altogether; what it
keeps are local features. The first ``INDEXED`` keypoints of each image (the strongest of each
grid cell first, see stages.dupverify.spread) enter ``TABLES`` hash tables keyed by disjoint
``BITS``-bit pieces of the 256-bit descriptor (locality-sensitive hashing: two descriptors of one
point, ~20-40 bits apart, share some piece with good odds; unrelated ones rarely). Pairs of
descriptors in one bucket are checked on their whole 256 bits (``MAX_DISTANCE``), buckets larger
than ``MAX_BUCKET`` (textures that are everywhere) are skipped, and two images become a candidate
pair when ``MIN_SHARED`` or more of their descriptors met. Everything is sorting and vectorised
comparison; no faiss index is needed. The descriptors stay where they are (a memory-mapped
``dupverify.Bank``): a table reads its 3-byte pieces, the check reads the descriptors of the pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

INDEXED = 48
TABLES = 10
BITS = 24
MAX_BUCKET = 32
MAX_DISTANCE = 24
MIN_SHARED = 3
#: Images whose keys are read at once, and bucket pairs checked at once (bounds on working memory).
CHUNK = 16384
BLOCK = 1 << 18


def keypoint_pairs(desc: np.ndarray, count: np.ndarray, release: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, shared): image pairs a < b whose indexed descriptors met at least MIN_SHARED times.

    *desc* is (n, m, 32) uint8 (a ``dupverify.Bank``'s, memory-mapped or not) and *count* how many of
    each image's m are real; the first ``INDEXED`` of each are indexed, read a table's piece at a time
    and ``CHUNK`` images at a time. *release* (a ``Bank``'s) is called after every chunk and block read:
    the pages of a mapped bank leave the process as soon as they are used. Bucket pairs are checked ``BLOCK`` at a time, so the
    working memory stays a few arrays of one table's keys whatever the pair count.
    """
    n_img = len(count)
    per = np.minimum(np.asarray(count, np.int64), INDEXED)
    z = np.zeros(0, np.int64)
    if per.sum() == 0:
        return z, z, z
    # Entry e is descriptor slot[e] of image owner[e]; built CHUNK images at a time (no n-sized int64 temporaries).
    starts = np.concatenate([[0], np.cumsum(per)])
    n = int(starts[-1])
    owner, slot = np.empty(n, np.int32), np.empty(n, np.uint8)
    bounds = starts[np.arange(0, n_img + CHUNK, CHUNK).clip(max=n_img)].tolist()
    for c, (lo, hi) in enumerate(pairwise(bounds)):
        first = c * CHUNK
        p = per[first:first + CHUNK]
        owner[lo:hi] = np.repeat(np.arange(first, first + len(p), dtype=np.int32), p)
        slot[lo:hi] = np.arange(hi - lo) - np.repeat(starts[first:first + len(p)] - lo, p)
    words = desc.view(np.uint64)  # (n, m, 4)
    step = BITS // 8
    found: list[np.ndarray] = []
    for t in range(TABLES):
        key = np.empty(n, np.uint32)
        for lo, hi in pairwise(bounds):
            piece = desc[owner[lo:hi], slot[lo:hi], step * t:step * (t + 1)].astype(np.uint32)
            key[lo:hi] = piece[:, 0] | (piece[:, 1] << 8) | (piece[:, 2] << 16)
            if release is not None:
                release()
        order = np.argsort(key).astype(np.int32)  # any order within a bucket: every pair in it is compared
        ks = key[order]
        del key
        start = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]])).astype(np.int32)
        length = np.diff(np.append(start, n)).astype(np.int32)
        run_len = np.repeat(length, length)
        keep = (run_len >= 2) & (run_len <= MAX_BUCKET)
        ids, kk, rl = order[keep], ks[keep], run_len[keep]
        del order, ks, run_len, keep, start, length
        for o in range(1, MAX_BUCKET):
            m = len(ids) - o
            if m <= 0:
                break
            same = np.flatnonzero((kk[:m] == kk[o:]) & (rl[:m] > o))
            if not len(same):
                break
            for b in range(0, len(same), BLOCK):
                at = same[b:b + BLOCK]
                i, j = ids[at].astype(np.int64), ids[at + o].astype(np.int64)
                near = np.bitwise_count(words[owner[i], slot[i]] ^ words[owner[j], slot[j]]).sum(axis=1) <= MAX_DISTANCE
                i, j = i[near], j[near]
                other = owner[i] != owner[j]
                found.append(np.minimum(i, j)[other] * n + np.maximum(i, j)[other])
                if release is not None:
                    release()
    if not found:
        return z, z, z
    pairs = np.unique(np.concatenate(found))  # each descriptor pair once, whatever tables it met in
    oa, ob = owner[pairs // n].astype(np.int64), owner[pairs % n].astype(np.int64)
    img = np.minimum(oa, ob) * n_img + np.maximum(oa, ob)
    uniq, shared = np.unique(img, return_counts=True)
    ok = shared >= MIN_SHARED
    return uniq[ok] // n_img, uniq[ok] % n_img, shared[ok].astype(np.int64)
