"""dedup's candidate pairs: near pHashes, then shared keypoints; the nearest few of each image.

``phash_pairs`` joins the main pHashes (of the face crop and, through crop, of the whole image)
within the candidate radius and the mirrored and window hashes within the duplicate radius
(stages.phash.near_pairs); ``with_keypoint_pairs`` adds the pairs whose keypoints met (below),
ranked after every pHash candidate; ``nearest_by_kind`` marks the ``top_k`` nearest pHash
candidates and the ``top_k`` keypoint candidates of each image, the ones verification looks at.

Candidates by shared keypoints: images whose ORB descriptors meet in hash buckets. A copy
cropped to a fifth of the photo, padded or cut out has another pHash altogether; what it
keeps are local features. The first ``INDEXED`` keypoints of each image (the strongest of each
grid cell first, see stages.dupkeys.spread) enter ``TABLES`` hash tables keyed by disjoint
``BITS``-bit pieces of the 256-bit descriptor (locality-sensitive hashing: two descriptors of one
point, ~20-40 bits apart, share some piece with good odds; unrelated ones rarely). Pairs of
descriptors in one bucket are checked on their whole 256 bits (``MAX_DISTANCE``), buckets larger
than ``MAX_BUCKET`` (textures that are everywhere) are skipped, and two images become a candidate
pair when ``MIN_SHARED`` or more of their descriptors met. Everything is counting, sorting and
vectorised comparison; no faiss index is needed. The descriptors stay where they are (a
memory-mapped ``dupkeys.Bank``): a table reads its 3-byte pieces and one 64-bit word of each
descriptor, in image order. With 24M descriptors (500k images) 24-bit keys collide by chance in
about 17M bucket pairs a table; the word, a lower bound of the whole distance, drops all but a few
percent of them before the check reads the whole descriptors of the rest from the bank, in image
order (read at random places, a mapped bank would map most of itself). The chunks of a table are
read, and its classes of buckets paired, in one thread per core: the work is NumPy's, which lets go
of the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.base import cores
from stages.phash import key_order, near_pairs, unhex, unique, unique_counts

if TYPE_CHECKING:
    from stages.dupkeys import Bank

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


#: How a pair was proposed: its main hashes, a window against a main hash, a mirrored hash, shared keypoints.
MAIN, WINDOW, FLIP, KEYPOINTS = 0, 1, 2, 3
#: By what, as bits: the view's (the face crop's) hashes or keypoints, the whole image's (through crop;
#: the bank's set s is bit 1 << s, as ``bank_pairs`` marks them and ``dupverify.prove`` reads them).
FACES, WHOLE = 1, 2


#: Candidate pairs: a, b (a < b), distance, kind (``MAIN`` ...), sets (``FACES`` | ``WHOLE``).
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _codes(metrics: Sequence[dict[str, Any]], prefix: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(main, mirrored, windows) codes of the view (prefix "phash") or of the whole image ("img")."""
    if prefix == "img":
        def get(m: dict[str, Any], k: str) -> str:
            return str(m.get(f"img_{k}", m["phash" if k == "phash" else f"phash_{k}"]))
        main = unhex([get(m, "phash") for m in metrics])
        flip = unhex([get(m, "flip") for m in metrics])
        crops = [get(m, "crops") for m in metrics]
    else:
        main, flip = unhex([m["phash"] for m in metrics]), unhex([m["phash_flip"] for m in metrics])
        crops = [m["phash_crops"] for m in metrics]
    return main, flip, [unhex([c[16 * k:16 * (k + 1)] for c in crops]) for k in range(len(crops[0]) // 16 if crops else 0)]


def phash_pairs(metrics: Sequence[dict[str, Any]], reach: int, radius: int, *, flips: bool, crops: bool) -> Pairs:
    """Every pair (a < b) whose main pHashes are within *reach* bits, or a main hash and a mirrored one
    (*flips*) or a window's (*crops*) within *radius*, once, with its smallest distance, how it was seen
    and by which hashes (``FACES`` | ``WHOLE`` bits: the view's, the whole image's)."""
    found: list[tuple[np.ndarray, ...]] = []
    d: Any  # a pair's distances, then every pair's
    v: Any  # how a pair was seen, then every pair's
    prefixes = ["phash"] + (["img"] if any("img_phash" in m for m in metrics) else [])
    for prefix in prefixes:
        bit = FACES if prefix == "phash" else WHOLE
        main, flip, wins = _codes(metrics, prefix)
        # Only the main hashes reach out to candidates: the mirrored hash cannot be verified (keypoints
        # are not mirror-invariant) and a window of a copy sits within the radius or is found by its
        # keypoints (the same recall on the development set), and each far query costs as much as the main one.
        joins = [(near_pairs(main, reach)[0], MAIN)]
        near: list[np.ndarray] = ([flip] if flips else []) + (wins if crops else [])
        via = ([FLIP] if flips else []) + [WINDOW] * (len(wins) if crops else 0)
        if near:
            joins += list(zip(near_pairs(main, radius, near), via, strict=True))
        for (i, j, d), v in joins:
            keep = i != j
            n_kept = int(keep.sum())
            found.append((np.minimum(i, j)[keep], np.maximum(i, j)[keep], d[keep], np.full(n_kept, v), np.full(n_kept, bit, np.uint8)))
    if not found:
        z = np.zeros(0, np.int32)
        return z, z, z.astype(np.int16), z.astype(np.int8), z.astype(np.uint8)
    a, b, d, v, s = (np.concatenate(x) for x in zip(*found, strict=True))
    order = np.lexsort((v, d, b, a))
    a, b, d, v, s = a[order], b[order], d[order], v[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    s = np.bitwise_or.reduceat(s, np.flatnonzero(first)) if len(s) else s
    # Compact: 12 bytes a pair, not 40 (tens of millions of pairs on a 500k collection of near copies).
    return a[first].astype(np.int32), b[first].astype(np.int32), d[first].astype(np.int16), v[first].astype(np.int8), s


def nearest_by_kind(a: np.ndarray, b: np.ndarray, d: np.ndarray, v: np.ndarray, n: int, k: int) -> np.ndarray:
    """``nearest``, ranked apart for the pairs only shared keypoints proposed (``KEYPOINTS``, most
    shared first) and the others (nearest pHash first): each image's *k* of each. Chance pHash
    neighbours within the candidate radius grow with the collection (FER2013's 28,709 faces: 462
    with 12 or more), a copy's shared keypoints do not; ranked after every pHash candidate, a
    reframed copy's pair would fall out of a crowded image's *k*."""
    out = np.zeros(len(a), bool)
    for kind in (v == KEYPOINTS, v != KEYPOINTS):
        at = np.flatnonzero(kind)
        out[at] = nearest(a[at], b[at], d[at], n, k)
    return out


def nearest(a: np.ndarray, b: np.ndarray, d: np.ndarray, n: int, k: int) -> np.ndarray:
    """Mask of the pairs that are among the *k* nearest of either of their images."""
    if not len(a) or k == 0:
        return np.zeros(len(a), bool)
    ends = np.concatenate([a, b])
    dist = np.concatenate([d, d])
    order = np.lexsort((dist, ends))
    start = np.searchsorted(ends[order], np.arange(n))
    rank = np.empty(len(ends), np.int64)
    rank[order] = np.arange(len(ends)) - start[ends[order]]
    return (rank[:len(a)] < k) | (rank[len(a):] < k)


def with_keypoint_pairs(pairs: Pairs, bank: Bank, rank_from: int) -> Pairs:
    """*pairs* (sorted by a, then b) and the pairs of *bank* whose keypoints met: a new pair gets the
    distance ``rank_from + INDEXED - shared`` (after every pHash candidate; more shared, nearer) and
    the kind ``KEYPOINTS``; a pair proposed both ways keeps its pHash distance and gains the sets."""
    a, b, d, v, sets = pairs
    n = len(bank)
    ka, kb, shared, kbits = bank_pairs(bank)
    key, kkey = a.astype(np.int64) * n + b, ka * n + kb
    at = np.searchsorted(key, kkey).clip(max=max(len(key) - 1, 0))
    new = ~(key[at] == kkey) if len(key) else np.ones(len(kkey), bool)
    sets = sets.copy()
    sets[at[~new]] |= kbits[~new]
    return (np.concatenate([a, ka[new].astype(a.dtype)]), np.concatenate([b, kb[new].astype(b.dtype)]),
            np.concatenate([d, (rank_from + np.maximum(0, INDEXED - shared[new])).astype(d.dtype)]),
            np.concatenate([v, np.full(int(new.sum()), KEYPOINTS, v.dtype)]), np.concatenate([sets, kbits[new]]))


def bank_pairs(bank: Bank) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, shared, sets): image pairs a < b of a ``dupkeys.Bank`` whose keypoints met, each once,
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

    *desc* is (n, m, 32) uint8 (a ``dupkeys.Bank``'s, memory-mapped or not) and *count* how many of
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
    found: list[np.ndarray] = []
    threads = cores()
    with ThreadPoolExecutor(threads) as pool:  # the work is NumPy's, which lets go of the GIL
        for t in range(TABLES):
            key, sig = _table_keys(desc, t, per, bounds, release, pool)
            pi, pj = _table_pairs(key, sig, owner, pool, threads)
            del key, sig
            if pi:
                i, j = np.concatenate(pi).astype(np.int64), np.concatenate(pj).astype(np.int64)
                need = unique(np.concatenate([i, j]))
                got = _gather(desc, need, owner, slot, bounds, release)
                near = np.bitwise_count(got[_rows(need, i)] ^ got[_rows(need, j)]).sum(axis=1) <= MAX_DISTANCE
                found.append(i[near] * n + j[near])
    if not found:
        return z, z, z
    pairs = unique(np.concatenate(found))  # each descriptor pair once, whatever tables it met in
    oa, ob = owner[pairs // n].astype(np.int64), owner[pairs % n].astype(np.int64)
    img = np.minimum(oa, ob) * n_img + np.maximum(oa, ob)
    uniq, shared = unique_counts(img)
    ok = shared >= MIN_SHARED
    return uniq[ok] // n_img, uniq[ok] % n_img, shared[ok].astype(np.int64)


def _rows(need: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The index in *need* (sorted, distinct, below 2**32) of each value of *x* (all of them in
    *need*): a binary search of the values in sorted order, each packed with its place in one
    64-bit word for the sort. Searched at random, a million values cost 0.4 s on this CPU where
    crowded buckets (FER2013's faces) give a million pairs a table; in order, 0.03 s."""
    packed = (x.astype(np.uint64) << np.uint64(32)) | np.arange(len(x), dtype=np.uint64)
    packed.sort()
    out = np.empty(len(x), np.int64)
    out[(packed & np.uint64(0xFFFFFFFF)).astype(np.int64)] = np.searchsorted(need, (packed >> np.uint64(32)).astype(np.int64))
    return out


def _table_keys(desc: np.ndarray, t: int, per: np.ndarray, bounds: list[int], release: Callable[[], None] | None,
                pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray]:
    """Table *t*'s key piece of every entry, and the 64-bit word of the descriptor the piece does not
    overlap (the filter of ``_bucket_pairs``), read ``CHUNK`` images at a time in *pool*'s threads."""
    n, width, step = bounds[-1], int(per.max()), BITS // 8
    words = desc.view(np.uint64)  # (n, m, 4)
    word = 0 if step * (t + 1) > 8 * (words.shape[2] - 1) else words.shape[2] - 1
    key, sig = np.empty(n, np.uint32), np.empty(n, np.uint64)

    def read(c: int) -> None:
        first, (lo, hi) = c * CHUNK, bounds[c:c + 2]
        real = np.arange(width) < per[first:first + CHUNK, None]  # entries in (image, slot) order
        piece, w = desc[first:first + CHUNK, :width, step * t:step * (t + 1)], words[first:first + CHUNK, :width, word]
        if real.all():  # every image of the chunk has all its slots (the usual case): no mask to apply
            piece, w = piece.reshape(-1, step), w.reshape(-1)
        else:
            piece, w = piece[real], w[real]
        piece = piece.astype(np.uint32)
        key[lo:hi] = piece[:, 0] | (piece[:, 1] << 8) | (piece[:, 2] << 16)
        sig[lo:hi] = w
        if release is not None:
            release()

    list(pool.map(read, range(len(bounds) - 1)))
    return key, sig


def _table_pairs(key: np.ndarray, sig: np.ndarray, owner: np.ndarray, pool: ThreadPoolExecutor,
                 threads: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The entry pairs (i < j, of two images) of one table whose keys meet and words pass the filter.

    Buckets are taken a class of keys at a time (by a multiplicative hash of the key: a bucket is never
    split, and skewed keys still spread), one class to each of *threads* threads of *pool*, about
    ``PART_ENTRIES`` entries over all of them at once: the sorting temporaries stay a few times that whatever the collection and the cores.
    """
    n = len(key)
    parts = max(1, min(255, n * threads // PART_ENTRIES))
    part_of = None
    if parts > 1:  # the hash's top byte scaled to the classes, in place (no 64-bit temporaries)
        h = key * np.uint32(0x9E3779B1)
        h >>= np.uint32(24)
        h *= np.uint32(parts)
        h >>= np.uint32(8)
        part_of = h.astype(np.uint8)
        del h

    def pairs(part: int) -> tuple[np.ndarray, np.ndarray]:
        if part_of is not None:
            sel = np.flatnonzero(part_of == part).astype(np.int32)
            i, j = _bucket_pairs(sel, key[sel], sig[sel], n)
        else:
            i, j = _bucket_pairs(None, key, sig, n)
        other = owner[i] != owner[j]
        return np.minimum(i, j)[other], np.maximum(i, j)[other]

    found = list(pool.map(pairs, range(parts)))
    return [i for i, _ in found], [j for _, j in found]


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
    else:
        at = None
    # Sorted by key (any order within a bucket: every pair in it is compared).
    at, kk = key_order(key, at)
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
