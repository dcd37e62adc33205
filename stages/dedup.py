"""dedup: exact and near-duplicate images, grouped; the best of each group stays.

Per item (fused pass), on the face crop the crop stage handed on, else on the whole image, reduced
to at most ``HASH_SIDE`` px: a blake2b hash of those decoded pixels and the source size (exact
copies; a reduced copy is decoded the same way from the same bytes), a 64-bit DCT
pHash, the pHash of the mirrored image (free, see stages.phash) and the pHashes of five 90%
windows (centre and corners), which find copies cropped or shifted by up to ~10%: a pHash
alone moves 12-20 bits under such a crop (measured in bench/dedup.py). Besides, the keypoints
that prove a match (stages.dupverify: 96 ORB keypoints, 3.3 kB of bytes, kept as the row's blob
and out of the records every later dataset step holds), and, when the crop stage ran,
the pHashes and keypoints of the whole image too (``img_*``; the keypoints with the face box), so
that a reframed copy is found by its face or by its frame: a crop of a group photo may keep
another face than the photo did.

Dataset step, candidates then proof: multi-index hashing on sub-hashes (stages.phash) joins every
image with every other within ``CANDIDATE_RADIUS`` bits (main x main, on the face crop and on the whole image) and
within ``radius`` bits (windows x main, and mirrored x main unless ``flips`` is off: a mirrored copy
is a duplicate by default, as training flips faces), and stages.dupindex proposes the pairs that
share keypoints (read from a memory-mapped ``dupkeys.Bank`` filled from the blobs of the stage's
parts). A pair
within ``radius`` bits is a duplicate as it stands (the measured precision of pHash alone there is
1.0); a pair further apart is a candidate, and only the ``top_k`` nearest pHash candidates and
the ``top_k`` keypoint candidates (most shared first) of each image are verified by local features and a geometric fit (``min_inliers`` inliers covering
``min_overlap`` of the picture the two share). Through crop a pair is verified on what proposed
it: the face crops' keypoints, the whole images' (whose fit must also hold inliers on the faces,
see stages.dupverify), or both; each set's keypoints are indexed apart. Pixel-identical images are joined too, and the
pairs become groups (connected components). Per group: differing labels -> every member
``label_conflict``; else the largest image stays (then the sharpest, when the quality stage ran,
then the smallest key) and the others are ``duplicate`` rows naming it, with ``dup_of``,
``dup_kind`` (exact, resized, reframed, mirror, cutout; see ``relation``) and the evidence
(``dup_hamming``; ``dup_inliers`` and ``dup_overlap`` where keypoints were compared; ``dup_via``,
the member it was proved against, when that is not the kept one) in their metrics. ``dup_group`` (the group's
smallest key, "" for a unique image) goes to the manifest, so the split stage can keep a group
together. The join and the kinds are stages.dupgroups; this module hashes and decides.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from manifests.store import Store
from stages import dupkeys, dupprocs, dupverify
from stages.base import ConfigError, Context, Item, Outcome, Params, Stage, register
from stages.dupgroups import MAX_RADIUS, Edge, find_groups, relation
from stages.images import Decoded, to_gray
from stages.phash import phash, pixel_hash

log = logging.getLogger(__name__)

#: Longer side of the whole image when no face crop is handed on (a pHash looks at 32x32).
HASH_SIDE = 256
#: The windows hashed besides the whole image: fraction of each side kept, and their anchors.
WINDOW_KEEP = 0.9
N_WINDOWS = 5
#: Images' keypoints written to the bank, or duplicates described (each reads two), between two releases.
RELEASE_EVERY_ITEMS = 4096


@dataclass(frozen=True)
class DedupParams(Params):
    mode: str = field(default="near", metadata={
        "help": "exact: pixel-identical copies only; near: also perceptually similar ones", "choices": ("exact", "near"),
        "decide": True})
    radius: int = field(default=4, metadata={
        "help": f"near duplicates differ in at most this many of the 64 pHash bits (0-{MAX_RADIUS}; pHash distances are nearly always even)",
        "decide": True})
    crops: bool = field(default=True, metadata={
        "help": "also count copies cropped or shifted by about 10%% as duplicates", "decide": True})
    flips: bool = field(default=True, metadata={
        "help": "also count mirrored (horizontally flipped) copies as duplicates (training flips faces: a mirrored "
                "copy across splits is a leak)", "decide": True})
    verify: bool = field(default=True, metadata={
        "help": "verify candidates further than --dedup-radius by local features and geometry (finds reframed copies)",
        "decide": True})
    keypoints: bool = field(default=True, metadata={
        "help": "also propose candidates by shared keypoints (finds heavy crops and cut-outs; the costly part on large sets)",
        "decide": True})
    min_inliers: int = field(default=8, metadata={
        "help": "verification: keypoint matches consistent with one similarity transform needed", "decide": True})
    min_overlap: float = field(default=0.1, metadata={
        "help": "verification: fraction of the shared picture those matches must cover (0-1)", "decide": True})
    top_k: int = field(default=12, metadata={
        "help": "verification: candidates verified per image, nearest first, of pHash and of keypoint candidates each (bounds the work)", "decide": True})

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "near"):
            raise ValueError(f"dedup.mode must be exact or near, got {self.mode!r}")
        if not 0 <= self.radius <= MAX_RADIUS:
            raise ValueError(f"dedup.radius must be 0-{MAX_RADIUS}, got {self.radius}")
        if not 0 <= self.min_overlap <= 1:
            raise ValueError(f"dedup.min_overlap must be 0-1, got {self.min_overlap}")
        if self.min_inliers < 3 or self.top_k < 0:
            raise ValueError("dedup.min_inliers must be >= 3 and dedup.top_k >= 0")


def windows(gray: np.ndarray) -> list[np.ndarray]:
    """The centre and four corner windows keeping ``WINDOW_KEEP`` of each side."""
    h, w = gray.shape[:2]
    hh, ww = max(1, round(h * WINDOW_KEEP)), max(1, round(w * WINDOW_KEEP))
    dy, dx = h - hh, w - ww
    return [gray[dy // 2:dy // 2 + hh, dx // 2:dx // 2 + ww], gray[:hh, :ww], gray[:hh, dx:], gray[dy:, :ww], gray[dy:, dx:]]


def hashes(pixels: np.ndarray, source_size: tuple[int, int], detailed: np.ndarray | None = None, keypoints: bool = True) -> dict[str, Any]:
    """Every hash dedup stores for one image (HxW or HxWx3 uint8), and the packed keypoints (``orb``,
    bytes: the outcome's blob) of *detailed* (the same picture at up to ``dupkeys.SIDE`` px; *pixels*
    when None) unless *keypoints* is False."""
    gray = np.ascontiguousarray(to_gray(pixels))
    main, mirrored = phash(gray)
    crops = "".join(phash(np.ascontiguousarray(w))[0] for w in windows(gray))
    fine = gray if detailed is None or not keypoints else np.ascontiguousarray(to_gray(detailed))
    return {"pixel_hash": pixel_hash(pixels, source_size), "phash": main, "phash_flip": mirrored, "phash_crops": crops,
            **({"orb": dupkeys.features(fine)} if keypoints else {})}


def frame_hashes(pixels: np.ndarray) -> dict[str, str]:
    """pHashes of the whole image beside a face crop's (``img_`` prefixed): candidates by the frame."""
    gray = np.ascontiguousarray(to_gray(pixels))
    main, mirrored = phash(gray)
    return {"img_phash": main, "img_flip": mirrored, "img_crops": "".join(phash(np.ascontiguousarray(w))[0] for w in windows(gray))}


@register
class Dedup(Stage[DedupParams]):
    name = "dedup"
    Params = DedupParams
    columns = ("dup_group",)
    version = 4

    def __init__(self, params: DedupParams | None = None) -> None:
        super().__init__(params)
        # Near duplicates need faiss; say so before any work (a run without dedup never needs it).
        if params is not None and self.params.mode == "near" and importlib.util.find_spec("faiss") is None:

            raise ConfigError("dedup needs faiss for near duplicates: pip install faiss-cpu  (or --dedup-mode exact)")

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        if ctx.view is not None:
            size = ctx.view.size
            pixels = ctx.view.at_most(HASH_SIDE)
            # "Largest" means the most source pixels on the face, whatever size crop saved it at.
            crop = ctx.upstream.get("crop")
            box = crop.metrics if crop is not None else {}
            area = int(box.get("box_w", size[0])) * int(box.get("box_h", size[1]))
            extra = frame_hashes(image.at_most(HASH_SIDE))
            detailed = ctx.view.at_most(dupkeys.SIDE)
            frame = image.at_most(dupkeys.SIDE)
            k = frame.shape[1] / image.size[0]
            face = tuple(float(box[c]) * k for c in ("box_x", "box_y", "box_w", "box_h")) if "box_x" in box else None
            # The whole image's keypoints too, with the face box: a copy whose crop kept another face of the photo.
            second = dupkeys.features(np.ascontiguousarray(to_gray(frame)), face)
        else:
            pixels, size = image.at_most(HASH_SIDE), image.size
            area = size[0] * size[1]
            extra = {}
            detailed = image.at_most(dupkeys.SIDE)
            second = b""
        metrics = hashes(pixels, size, detailed)
        first = metrics.pop("orb")
        blob = (first or dupkeys.EMPTY) + second if second else first
        return Outcome(item.key, metrics={**metrics, **extra, "pixels": area}, blob=blob)

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        p: DedupParams = self.params
        recs = sorted(records, key=lambda r: r["key"])
        hashed = [r for r in recs if "phash" in r["metrics"]]
        for r in recs:
            if "phash" not in r["metrics"]:  # not hashed (cannot happen in a normal run): nothing to compare
                yield Outcome(r["key"], metrics={"dup_group": ""})
        if not hashed:
            return
        with tempfile.TemporaryDirectory(dir=work, prefix=".dedup-keypoints-") as tmp:
            bank = self.keypoints(hashed, work, Path(tmp)) if p.mode == "near" and p.verify else None
            yield from self.decide(hashed, p, bank)

    def keypoints(self, records: list[dict[str, Any]], work: Path, folder: Path) -> dupkeys.Bank:
        """The records' keypoints (in their order) from the blobs of this stage's parts, memory-mapped under *folder*."""
        index = {r["key"]: i for i, r in enumerate(records)}
        frames = any("img_phash" in r["metrics"] for r in records)  # through crop: the whole images' keypoints too
        bank = dupkeys.Bank(len(records), folder, sets=2 if frames else 1)
        for k, (key, blob) in enumerate(Store(work).read_blobs(self.name)):
            if key in index:
                bank.put(index[key], blob)
            if k % RELEASE_EVERY_ITEMS == RELEASE_EVERY_ITEMS - 1:
                bank.release()  # written pages go to the file, not the process's memory
        bank.release()
        return bank

    @staticmethod
    def verified_to_kept(hashed: list[dict[str, Any]], members: dict[int, list[int]], edges: dict[tuple[int, int], Edge],
                         p: DedupParams, bank: dupkeys.Bank | None) -> dict[int, dupverify.Evidence]:
        """Per duplicate whose relation to the kept image needs a verification of its own (it was joined
        through other members, or by pHash alone beyond the radius): that verification, computed by
        processes where there are many (``dupprocs.verify_pairs``); else nothing (``relation`` verifies)."""
        if p.mode != "near" or not p.verify or bank is None:
            return {}
        todo: list[tuple[int, int]] = []
        for idx in members.values():
            if len(idx) == 1 or len({hashed[i]["label"] for i in idx}) > 1:
                continue
            b = _kept(hashed, idx)
            for i in idx:
                edge = edges.get((min(i, b), max(i, b)))
                if (i != b and hashed[i]["metrics"]["pixel_hash"] != hashed[b]["metrics"]["pixel_hash"]
                        and (edge is None or (edge.evidence is None and edge.distance > p.radius))):
                    todo.append((i, b))
        if not todo:
            return {}
        pairs = np.array(todo, np.int64)
        seen = dupprocs.verify_pairs(bank, pairs[:, 0], pairs[:, 1])
        return {} if seen is None else {int(pairs[k, 0]): ev for k, ev in seen.items()}

    def decide(self, hashed: list[dict[str, Any]], p: DedupParams, bank: dupkeys.Bank | None) -> Iterator[Outcome]:
        groups = find_groups([r["metrics"] for r in hashed], p, bank)
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups.root.tolist()):
            members.setdefault(g, []).append(i)
        links: dict[int, list[tuple[int, Edge]]] = {}
        for (x, y), e in groups.edges.items():
            links.setdefault(x, []).append((y, e))
            links.setdefault(y, []).append((x, e))
        def feats(i: int, j: int, read: bool = True) -> tuple[Any, Any, Any]:
            """The keypoints of records i and j (unless not *read*: ``relation`` will not verify the pair), and how
            to read the whole images' (through crop)."""
            if bank is None:
                return None, None, None
            whole = (lambda: (bank.get(i, 1), bank.get(j, 1))) if bank.sets > 1 else None
            return (bank.get(i), bank.get(j), whole) if read else (None, None, whole)

        seen = self.verified_to_kept(hashed, members, groups.edges, p, bank)
        dups = conflicts = 0
        for g, idx in members.items():
            if len(idx) == 1:
                yield Outcome(hashed[g]["key"], metrics={"dup_group": ""})
                continue
            group = [hashed[i] for i in idx]
            gid = hashed[g]["key"]
            labels = sorted({r["label"] for r in group})
            if len(labels) > 1:
                conflicts += len(group)
                detail = f"{len(group)} duplicates labelled {', '.join(repr(x) for x in labels)} (group {gid})"
                for r in group:
                    yield Outcome.rejected(r["key"], "label_conflict", detail, dup_group=gid)
                continue
            b = _kept(hashed, idx)
            best = hashed[b]
            yield Outcome(best["key"], metrics={"dup_group": gid})
            for i in idx:
                if i == b:
                    continue
                dups += 1
                if bank is not None and dups % RELEASE_EVERY_ITEMS == 0:
                    bank.release()
                r = hashed[i]
                edge = groups.edges.get((min(i, b), max(i, b)))
                verifies = i not in seen and (edge is None or (edge.evidence is None and edge.distance > p.radius))
                rel = relation(r["metrics"], best["metrics"], edge, p, *feats(i, b, verifies), seen=seen.get(i))
                if edge is None and rel["dup_kind"] != "exact" and not _proved(rel, p) and links.get(i):
                    # Joined through other members: the evidence of its own strongest join, and with whom.
                    j, e = min(links[i], key=lambda je: (je[1].evidence is not None, -(je[1].evidence.inliers if je[1].evidence else 0),
                                                          je[1].distance, je[0]))
                    # A link is a pHash pair within the radius or a proved one: relation does not verify it again.
                    rel = relation(r["metrics"], hashed[j]["metrics"], e, p, *feats(i, j, False)) | {"dup_via": hashed[j]["key"]}
                if rel["dup_kind"] == "exact":
                    detail = f"exact copy of {best['key']}"
                else:
                    proof = f", {rel['dup_inliers']} keypoints matched" if rel.get("dup_inliers", 0) >= p.min_inliers else ""
                    via = f" via {rel['dup_via']}" if "dup_via" in rel else ""
                    detail = f"near duplicate of {best['key']} (distance {rel['dup_hamming']}, {rel['dup_kind']}{proof}{via})"
                yield Outcome.rejected(r["key"], "duplicate", detail, dup_group=gid, dup_of=best["key"], **rel)
        log.info("dedup: %d groups (%d of pixel-identical images), %d near pairs (%d of %d verified candidates proved); "
                 "%d duplicates, %d label conflicts", sum(len(v) > 1 for v in members.values()), groups.exact_groups, groups.pairs,
                 groups.proved, groups.verified, dups, conflicts)


def _kept(hashed: list[dict[str, Any]], idx: list[int]) -> int:
    """The member of a group that stays (see ``_rank``)."""
    return min(idx, key=lambda i: _rank(hashed[i]))


def _proved(rel: dict[str, Any], p: DedupParams) -> bool:
    """Does a relation's evidence alone make the pair duplicates under *p*?"""
    return bool(rel["dup_hamming"] <= p.radius or (rel.get("dup_inliers", 0) >= p.min_inliers and rel.get("dup_overlap", 0) >= p.min_overlap))


def _rank(r: dict[str, Any]) -> tuple[float, float, str]:
    """Sort key of a group member: the smallest is kept (most pixels, then sharpest, then key)."""
    m = r["metrics"]
    sharp = m.get("sharpness")
    return (-float(m.get("pixels", 0)), -float(sharp) if isinstance(sharp, (int, float)) else 0.0, r["key"])
