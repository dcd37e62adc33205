"""dedup: exact and near-duplicate images, grouped; the best of each group stays.

Per item (fused pass), on the face crop the crop stage handed on, else on the whole image, reduced
to at most ``HASH_SIDE`` px: a blake2b hash of those decoded pixels and the source size (exact
copies; a reduced copy is decoded the same way from the same bytes), a 64-bit DCT
pHash, the pHash of the mirrored image (free, see stages.phash) and the pHashes of five 90%
windows (centre and corners), which find copies cropped or shifted by up to ~10%: a pHash
alone moves 12-20 bits under such a crop (measured in bench/dedup.py).

Dataset step: faiss hash indexes on sub-hashes join every image with every other within ``radius``
bits (main hash x main hashes, window hashes x main hashes, mirrored x main), pixel-identical
images are joined too, and the pairs become groups (connected components). Per group: differing
labels -> every member ``label_conflict``; else the largest image stays (then the sharpest, when
the quality stage ran, then the smallest key) and the others are ``duplicate`` rows naming it.
``dup_group`` (the group's smallest key, "" for a unique image) goes to the manifest, so the
split stage can keep a group together.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.images import Decoded, shrink, to_gray
from stages.base import Context, Item, Outcome, Params, Stage, register
from stages.phash import components, hamming, near_pairs, phash, pixel_hash, unhex

log = logging.getLogger(__name__)

#: Longer side of the whole image when no face crop is handed on (a pHash looks at 32x32).
HASH_SIDE = 256
#: The windows hashed besides the whole image: fraction of each side kept, and their anchors.
WINDOW = 0.9
N_WINDOWS = 5
MAX_RADIUS = 16


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
    flips: bool = field(default=False, metadata={
        "help": "also count mirrored (horizontally flipped) copies as duplicates", "decide": True})

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "near"):
            raise ValueError(f"dedup.mode must be exact or near, got {self.mode!r}")
        if not 0 <= self.radius <= MAX_RADIUS:
            raise ValueError(f"dedup.radius must be 0-{MAX_RADIUS}, got {self.radius}")


def windows(gray: np.ndarray) -> list[np.ndarray]:
    """The centre and four corner windows keeping ``WINDOW`` of each side."""
    h, w = gray.shape[:2]
    hh, ww = max(1, round(h * WINDOW)), max(1, round(w * WINDOW))
    dy, dx = h - hh, w - ww
    return [gray[dy // 2:dy // 2 + hh, dx // 2:dx // 2 + ww], gray[:hh, :ww], gray[:hh, dx:], gray[dy:, :ww], gray[dy:, dx:]]


def hashes(pixels: np.ndarray, source_size: tuple[int, int]) -> dict[str, Any]:
    """Every hash dedup stores for one image (HxW or HxWx3 uint8)."""
    gray = np.ascontiguousarray(to_gray(pixels))
    main, mirrored = phash(gray)
    crops = "".join(phash(np.ascontiguousarray(w))[0] for w in windows(gray))
    return {"pixel_hash": pixel_hash(pixels, source_size), "phash": main, "phash_flip": mirrored, "phash_crops": crops}


@dataclass
class Groups:
    """Result of the join over n hashed records (in key order)."""

    root: np.ndarray            # per record: index of the smallest member of its group
    pairs: int = 0              # near pairs found (each once)
    exact_groups: int = 0       # groups of pixel-identical images (>= 2 members)


def find_groups(metrics: Sequence[dict[str, Any]], p: DedupParams) -> Groups:
    """Group records by pixel identity and, in near mode, by pHash distance (see module doc)."""
    n = len(metrics)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    px = np.array([m["pixel_hash"] for m in metrics], dtype=object)
    order = np.argsort(px, kind="stable")
    same = px[order[1:]] == px[order[:-1]]
    src.append(order[:-1][same].astype(np.int64))
    dst.append(order[1:][same].astype(np.int64))
    exact_groups = int(np.count_nonzero(same & ~np.concatenate([[False], same[:-1]]))) if n > 1 else 0
    pairs = 0
    if p.mode == "near" and n > 1:
        codes = unhex([m["phash"] for m in metrics])
        queries: list[np.ndarray | None] = [None]
        if p.flips:
            queries.append(unhex([m["phash_flip"] for m in metrics]))
        if p.crops:
            queries += [unhex([m["phash_crops"][16 * k:16 * (k + 1)] for m in metrics]) for k in range(N_WINDOWS)]
        for i, j, _ in near_pairs(codes, p.radius, queries):
            keep = i != j  # an image's own window or mirror matching itself
            src.append(i[keep])
            dst.append(j[keep])
            pairs += int(np.count_nonzero(keep))
    root = components(n, np.concatenate(src), np.concatenate(dst))
    return Groups(root, pairs, exact_groups)


def distance(a: dict[str, Any], b: dict[str, Any], p: DedupParams) -> int:
    """Smallest distance the join could have seen between two images (for the detail text)."""
    ds = [hamming(a["phash"], b["phash"])]
    if p.flips:
        ds += [hamming(a["phash_flip"], b["phash"]), hamming(a["phash"], b["phash_flip"])]
    if p.crops:
        for k in range(N_WINDOWS):
            w = slice(16 * k, 16 * (k + 1))
            ds += [hamming(a["phash_crops"][w], b["phash"]), hamming(a["phash"], b["phash_crops"][w])]
    return min(ds)


@register
class Dedup(Stage):
    name = "dedup"
    Params = DedupParams
    columns = ("dup_group",)
    version = 2

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params)
        # Near duplicates need faiss; say so before any work (a run without dedup never needs it).
        if params is not None and self.params.mode == "near" and importlib.util.find_spec("faiss") is None:  # type: ignore[attr-defined]
            from pipeline.config import ConfigError  # lazy: pipeline.config imports the stages

            raise ConfigError("dedup needs faiss for near duplicates: pip install faiss-cpu  (or --dedup-mode exact)")

    def process(self, item: Item, image: Decoded, ctx: Context) -> Outcome:
        if ctx.view is not None:
            size = (ctx.view.shape[1], ctx.view.shape[0])
            pixels = shrink(ctx.view, HASH_SIDE)
            # "Largest" means the most source pixels on the face, whatever size crop saved it at.
            crop = ctx.upstream.get("crop")
            box = crop.metrics if crop is not None else {}
            area = int(box.get("box_w", size[0])) * int(box.get("box_h", size[1]))
        else:
            pixels, size = image.at_most(HASH_SIDE), image.size
            area = size[0] * size[1]
        return Outcome(item.key, metrics={**hashes(pixels, size), "pixels": area})

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        p: DedupParams = self.params  # type: ignore[assignment]
        recs = sorted(records, key=lambda r: r["key"])
        hashed = [r for r in recs if "phash" in r["metrics"]]
        for r in recs:
            if "phash" not in r["metrics"]:  # not hashed (cannot happen in a normal run): nothing to compare
                yield Outcome(r["key"], metrics={"dup_group": ""})
        if not hashed:
            return
        groups = find_groups([r["metrics"] for r in hashed], p)
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups.root.tolist()):
            members.setdefault(g, []).append(i)
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
            best = min(group, key=_rank)
            yield Outcome(best["key"], metrics={"dup_group": gid})
            for r in group:
                if r is best:
                    continue
                dups += 1
                if r["metrics"]["pixel_hash"] == best["metrics"]["pixel_hash"]:
                    detail = f"exact copy of {best['key']}"
                else:
                    detail = f"near duplicate of {best['key']} (distance {distance(r['metrics'], best['metrics'], p)})"
                yield Outcome.rejected(r["key"], "duplicate", detail, dup_group=gid)
        log.info("dedup: %d groups (%d of pixel-identical images), %d near pairs; %d duplicates, %d label conflicts",
                 sum(len(v) > 1 for v in members.values()), groups.exact_groups, groups.pairs, dups, conflicts)


def _rank(r: dict[str, Any]) -> tuple[float, float, str]:
    """Sort key of a group member: the smallest is kept (most pixels, then sharpest, then key)."""
    m = r["metrics"]
    sharp = m.get("sharpness")
    return (-float(m.get("pixels", 0)), -float(sharp) if isinstance(sharp, (int, float)) else 0.0, r["key"])
