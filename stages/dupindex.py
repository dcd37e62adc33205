"""Candidates by shared keypoints: images whose ORB descriptors meet in hash buckets.

A copy cropped to a fifth of the photo, padded or cut out has another pHash altogether; what it
keeps are local features. The first ``INDEXED`` keypoints of each image (the strongest of each
grid cell first, see stages.dupverify.spread) enter ``TABLES`` hash tables keyed by disjoint
``BITS``-bit pieces of the 256-bit descriptor (locality-sensitive hashing: two descriptors of one
point, ~20-40 bits apart, share some piece with good odds; unrelated ones rarely). Pairs of
descriptors in one bucket are checked on their whole 256 bits (``MAX_DISTANCE``), buckets larger
than ``MAX_BUCKET`` (textures that are everywhere) are skipped, and two images become a candidate
pair when ``MIN_SHARED`` or more of their descriptors met. Everything is counting, sorting and
vectorised comparison; no faiss index is needed. The descriptors stay where they are (a
memory-mapped ``dupverify.Bank``): a table reads its 3-byte pieces and one 64-bit word of each
descriptor, in image order. With 24M descriptors (500k images) 24-bit keys collide by chance in
about 17M bucket pairs a table; the word, a lower bound of the whole distance, drops all but a few
percent of them before the check reads the whole descriptors of the rest from the bank, in image
order (read at random places, a mapped bank would map most of itself).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from stages.phash import unique, unique_counts

if TYPE_CHECKING:
    from stages.dupverify import Bank

INDEXED = 48
TABLES = 10
BITS = 24
MAX_BUCKET = 32
MAX_DISTANCE = 24
MIN_SHARED = 3
#: Images whose keys (and then the descriptors a check needs) are read at once, and about how many
#: of a table's entries are sorted at once.
CHUNK = 16384
PART_ENTRIES = 1 << 22


def bank_pairs(bank: Bank) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, shared, sets): image pairs a < b of a ``dupverify.Bank`` whose keypoints met, each once,
    with the most descriptors shared and, as bits (``1 << s``), every set s that proposed it. Each set
    (through crop: the face crops', the whole images') is indexed apart: as dense as one set."""
    n, runs = len(bank), []
    for s in range(bank.sets):
        a, b, shared = keypoint_pairs(bank.desc[s * n:(s + 1) * n], bank.count[s * n:(s + 1) * n], bank.release)
        runs.append((a, b, shared, np.full(len(a), 1 << s, np.uint8)))
    a, b, shared, sets = (np.concatenate(x) for x in zip(*runs, strict=True))
    if bank.sets > 1:
        order = np.lexsort((-shared, b, a))
        a, b, shared, sets = a[order], b[order], shared[order], sets[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        sets = np.bitwise_or.reduceat(sets, np.flatnonzero(first)) if len(sets) else sets
        a, b, shared = a[first], b[first], shared[first]
    return a, b, shared, sets


def keypoint_pairs(desc: np.ndarray, count: np.ndarray, release: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, shared): image pairs a < b whose indexed descriptors met at least MIN_SHARED times.

    *desc* is (n, m, 32) uint8 (a ``dupverify.Bank``'s, memory-mapped or not) and *count* how many of
    each image's m are real; the first ``INDEXED`` of each are indexed, read a table's piece at a time
    and ``CHUNK`` images at a time; the descriptors of the pairs the filter leaves are then read in
    the same order. *release* (a ``Bank``'s) is called after every chunk read: the pages of a mapped
    bank leave the process as soon as they are used. The working memory is a few arrays of one
    table's entries and the descriptors of its remaining pairs.
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
    width = int(per.max())
    step = BITS // 8
    found: list[np.ndarray] = []
    for t in range(TABLES):
        # The table's key piece, and the 64-bit word of the descriptor it does not overlap (the filter below).
        word = 0 if step * (t + 1) > 8 * (words.shape[2] - 1) else words.shape[2] - 1
        key, sig = np.empty(n, np.uint32), np.empty(n, np.uint64)
        for c, (lo, hi) in enumerate(pairwise(bounds)):
            first = c * CHUNK
            real = np.arange(width) < per[first:first + CHUNK, None]  # entries in (image, slot) order
            piece = desc[first:first + CHUNK, :width, step * t:step * (t + 1)][real].astype(np.uint32)
            key[lo:hi] = piece[:, 0] | (piece[:, 1] << 8) | (piece[:, 2] << 16)
            sig[lo:hi] = words[first:first + CHUNK, :width, word][real]
            if release is not None:
                release()
        pi: list[np.ndarray] = []
        pj: list[np.ndarray] = []
        # Buckets are taken PART_ENTRIES entries at a time (the keys of one residue class: a bucket is
        # never split), so the sorting temporaries stay a few times that whatever the collection.
        parts = max(1, n // PART_ENTRIES)
        for part in range(parts):
            if parts > 1:
                sel = np.flatnonzero(key % parts == part).astype(np.int32)
                i, j = _bucket_pairs(sel, key[sel], sig[sel], n)
            else:
                i, j = _bucket_pairs(None, key, sig, n)
            other = owner[i] != owner[j]
            pi.append(np.minimum(i, j)[other])
            pj.append(np.maximum(i, j)[other])
        del key, sig
        if pi:
            i, j = np.concatenate(pi).astype(np.int64), np.concatenate(pj).astype(np.int64)
            need = unique(np.concatenate([i, j]))
            got = _gather(desc, need, owner, slot, bounds, release)
            near = np.bitwise_count(got[np.searchsorted(need, i)] ^ got[np.searchsorted(need, j)]).sum(axis=1) <= MAX_DISTANCE
            found.append(i[near] * n + j[near])
    if not found:
        return z, z, z
    pairs = unique(np.concatenate(found))  # each descriptor pair once, whatever tables it met in
    oa, ob = owner[pairs // n].astype(np.int64), owner[pairs % n].astype(np.int64)
    img = np.minimum(oa, ob) * n_img + np.maximum(oa, ob)
    uniq, shared = unique_counts(img)
    ok = shared >= MIN_SHARED
    return uniq[ok] // n_img, uniq[ok] % n_img, shared[ok].astype(np.int64)


def _bucket_pairs(ids: np.ndarray | None, key: np.ndarray, sig: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Entry pairs (i, j) of *ids* (None: all entries) in one bucket of 2..MAX_BUCKET whose words *sig* lie within
    MAX_DISTANCE (a word's distance never exceeds the whole descriptor's: the pairs beyond it are out
    without reading the bank, all but a few percent of the chance pairs). *n*: all entries of the table."""
    if n <= 1 << (BITS - 1):
        # Up to half as many entries as buckets, most are alone in theirs: those are dropped first by
        # counting on the key's top bits (about twice as many bins as entries).
        top = key >> (BITS - min(BITS, max(8, n.bit_length() + 1)))
        at = np.flatnonzero(np.bincount(top)[top] >= 2)
        del top
        at = at[np.argsort(key[at])]
    else:
        at = np.argsort(key)
    # Sorted by key (any order within a bucket: every pair in it is compared), kept in buckets of
    # 2..MAX_BUCKET.
    kk = key[at]
    start = np.flatnonzero(np.concatenate([[True], kk[1:] != kk[:-1]]))
    length = np.diff(np.append(start, len(kk)))
    rl = np.repeat(length, length)
    keep = (rl >= 2) & (rl <= MAX_BUCKET)
    at, kk, rl = at[keep], kk[keep], rl[keep].astype(np.uint8)
    ids, sg = (at if ids is None else ids[at]).astype(np.int32), sig[at]
    del at, start, length, keep
    pi: list[np.ndarray] = []
    pj: list[np.ndarray] = []
    for o in range(1, MAX_BUCKET):
        m = len(ids) - o
        if m <= 0:
            break
        same = np.flatnonzero((kk[:m] == kk[o:]) & (rl[:m] > o))
        if not len(same):
            break
        same = same[np.bitwise_count(sg[same] ^ sg[same + o]) <= MAX_DISTANCE]
        pi.append(ids[same])
        pj.append(ids[same + o])
    z = np.zeros(0, np.int32)
    return (np.concatenate(pi), np.concatenate(pj)) if pi else (z, z)


def _gather(desc: np.ndarray, need: np.ndarray, owner: np.ndarray, slot: np.ndarray, bounds: list[int],
            release: Callable[[], None] | None) -> np.ndarray:
    """The descriptors of entries *need* (sorted) as (len(need), 4) uint64, read in image order a
    chunk at a time. Read at random places, a mapped file maps far more than it is asked for (the
    kernel maps whole page-cache folios, up to megabytes): in order, each page is mapped once."""
    out = np.empty((len(need), desc.shape[2] // 8), np.uint64)
    cut = np.searchsorted(need, bounds).tolist()
    for c, (a, b) in enumerate(pairwise(cut)):
        if a == b:
            continue
        e, first = need[a:b], c * CHUNK
        out[a:b] = desc[first:first + CHUNK].view(np.uint64)[owner[e] - first, slot[e]]
        if release is not None:
            release()
    return out
