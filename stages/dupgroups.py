"""dedup's dataset step: which hashed records are duplicates (``find_groups``: pixel identity, pHash
candidates, keypoint candidates, the proof of each) and how a duplicate relates to the image kept
(``relation``: its kind and evidence). See stages.dedup for the whole design."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from stages import dupindex, dupkeys, dupprocs, dupverify
from stages.phash import components, hamming

#: The widest ``dedup.radius``; keypoint candidates are proposed for pairs further apart than it.
MAX_RADIUS = 16
#: Pairs up to this many bits apart are candidates for verification. Wider costs much: on the FER2013
#: train faces the join yields 12 pairs per image at 10 bits, 33 at 12 and 458 at 16 (bench/dedup.py).
CANDIDATE_RADIUS = 10
#: Kinds: matches around the faces that make a pair the face crops proved a crop, not a cut-out (``relation``).
AROUND_FACES = 2


class DedupParams(Protocol):
    """What the join reads of the dedup stage's parameters (``stages.dedup.DedupParams``, frozen)."""

    @property
    def mode(self) -> str: ...

    @property
    def radius(self) -> int: ...

    @property
    def crops(self) -> bool: ...

    @property
    def flips(self) -> bool: ...

    @property
    def verify(self) -> bool: ...

    @property
    def keypoints(self) -> bool: ...

    @property
    def min_inliers(self) -> int: ...

    @property
    def min_overlap(self) -> float: ...

    @property
    def top_k(self) -> int: ...


@dataclass
class Edge:
    """Why two records are joined: their smallest pHash distance, how it was measured, and the verification."""

    distance: int
    via: int
    evidence: dupverify.Evidence | None = None


@dataclass
class Groups:
    """Result of the join over n hashed records (in key order)."""

    root: np.ndarray            # per record: index of the smallest member of its group
    pairs: int = 0              # near pairs joined (each once)
    exact_groups: int = 0       # groups of pixel-identical images (>= 2 members)
    edges: dict[tuple[int, int], Edge] = field(default_factory=dict)   # joined pairs (i < j), pixel-identical ones aside
    verified: int = 0           # candidate pairs verified
    proved: int = 0             # of which proved


def find_groups(metrics: Sequence[dict[str, Any]], p: DedupParams, bank: dupkeys.Bank | None = None) -> Groups:
    """Group records by pixel identity and, in near mode, by pHash distance and verification (see module doc).

    *bank*: the records' keypoints, in their order; None: from their ``orb`` bytes (``hashes`` output).
    """
    n = len(metrics)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    px = np.array([m["pixel_hash"] for m in metrics], dtype=object)
    order = np.argsort(px, kind="stable")
    same = px[order[1:]] == px[order[:-1]]
    src.append(order[:-1][same].astype(np.int64))
    dst.append(order[1:][same].astype(np.int64))
    exact_groups = int(np.count_nonzero(same & ~np.concatenate([[False], same[:-1]]))) if n > 1 else 0
    groups = Groups(np.arange(n), exact_groups=exact_groups)
    if p.mode == "near" and n > 1:
        reach = max(CANDIDATE_RADIUS, p.radius) if p.verify else p.radius
        pairs = dupindex.phash_pairs(metrics, reach, p.radius, flips=p.flips, crops=p.crops)
        if p.verify and bank is None:
            bank = dupkeys.Bank.of([m.get("orb", b"") for m in metrics])
        if p.verify and p.keypoints and bank is not None:
            pairs = dupindex.with_keypoint_pairs(pairs, bank, MAX_RADIUS + 1)
        a, b, d, v, sets = pairs
        direct = d <= p.radius
        check = ~direct & (v != dupindex.FLIP) & dupindex.nearest_by_kind(a, b, d, v, n, p.top_k) if p.verify else np.zeros(len(a), bool)
        todo = np.flatnonzero(check).tolist()
        # Through crop, a pair is verified on what proposed it: the face crops, the whole images (a
        # copy whose crop kept another face; see dupverify), or both. Without crop every set is the view's.
        if bank is None or bank.sets == 1:
            sets[:] = dupindex.FACES
        proofs: dict[int, dupverify.Evidence] = {}  # the pairs verification saw anything in (most see nothing)
        if bank is not None and todo:
            proofs = dupprocs.prove_candidates(bank, a, b, sets, todo, p.min_inliers, p.min_overlap)
        joined = direct.copy()
        for k, ev in proofs.items():
            joined[k] = ev.proves(p.min_inliers, p.min_overlap)
        groups.verified, groups.proved = len(todo) if bank is not None else 0, int(np.count_nonzero(joined & check))
        for k in np.flatnonzero(joined).tolist():
            groups.edges[(int(a[k]), int(b[k]))] = Edge(int(d[k]), int(v[k]), proofs.get(k, dupverify.NOTHING) if check[k] else None)
        if groups.edges:
            ij = np.array(list(groups.edges), dtype=np.int64)
            src.append(ij[:, 0])
            dst.append(ij[:, 1])
        groups.pairs = len(groups.edges)
    groups.root = components(n, np.concatenate(src), np.concatenate(dst))
    return groups


def distance(a: dict[str, Any], b: dict[str, Any], p: DedupParams) -> int:
    """Smallest pHash distance the join could have seen between two images (view and whole image)."""
    ds = []
    for pre, flip, crops in (("phash", "phash_flip", "phash_crops"), ("img_phash", "img_flip", "img_crops")):
        if pre not in a or pre not in b:
            continue
        ds.append(hamming(a[pre], b[pre]))
        if p.flips:
            ds += [hamming(a[flip], b[pre]), hamming(a[pre], b[flip])]
        if p.crops:
            for k in range(len(a[crops]) // 16):
                w = slice(16 * k, 16 * (k + 1))
                ds += [hamming(a[crops][w], b[pre]), hamming(a[pre], b[crops][w])]
    return min(ds)


def relation(ra: dict[str, Any], rb: dict[str, Any], edge: Edge | None, p: DedupParams,
             fa: dupkeys.Packed | None = None, fb: dupkeys.Packed | None = None,
             whole: Callable[[], tuple[dupkeys.Packed | None, dupkeys.Packed | None]] | None = None,
             seen: dupverify.Evidence | None = None) -> dict[str, Any]:
    """dup_kind and the evidence of a duplicate *ra* of the kept *rb* (``edge``: the pair's own join, if
    any; *fa*, *fb*: their keypoints; *whole*: gives the whole images' through crop, read when needed;
    *seen*: ``verify(fa, fb)`` where it was computed already).

    Kinds: exact (pixel-identical), mirror (joined by the mirrored hash), resized (the same framing:
    the pHash alone, or a fit whose frames overlap by IoU >= 0.8: other size, encoding or colours),
    reframed (a fit between different framings: cropped, padded, captioned), cutout (through crop:
    the face crops fit, the whole images do not, and fewer than ``AROUND_FACES`` keypoints around
    the faces agree once the faces are put on each other: the face is on another picture). Through crop the whole
    images' fit, where it proves the pair, tells resized from reframed.
    """
    if ra["pixel_hash"] == rb["pixel_hash"]:
        return {"dup_kind": "exact", "dup_hamming": 0}
    out: dict[str, Any] = {"dup_hamming": distance(ra, rb, p)}
    ev = edge.evidence if edge is not None else None
    if ev is None and p.mode == "near" and p.verify and (edge is None or edge.distance > p.radius):
        ev = seen if seen is not None else dupverify.verify(fa, fb)
    if ev is not None and ev.matches:
        out |= {"dup_inliers": ev.inliers, "dup_overlap": round(ev.overlap, 3)}
    if edge is not None and edge.evidence is None:
        out["dup_kind"] = ("resized", "reframed", "mirror")[edge.via]
    elif ev is not None and ev.proves(p.min_inliers, p.min_overlap):
        wa, wb = whole() if whole is not None and ev.faces < 0 else (None, None)
        # The whole images' fit as it stands: the face guard (which defers to the face crops) does not apply here.
        fit = replace(ev if wa is None or wb is None else dupverify.verify(wa, wb), faces=-1)
        if not fit.proves(p.min_inliers, p.min_overlap):  # too few keypoints left to fit: a small crop, or a cut-out
            out["dup_kind"] = "reframed" if dupverify.around_faces(wa, wb) >= AROUND_FACES else "cutout"
        else:
            out["dup_kind"] = "resized" if fit.frame_iou >= 0.8 else "reframed"
    else:  # joined through other members of the group, not to this one directly
        out["dup_kind"] = "resized" if out["dup_hamming"] <= p.radius else "reframed"
    return out
