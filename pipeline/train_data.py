"""Training input: records -> samples (file, label, split) -> tf.data pipelines at the model's input size.

Files the pipeline wrote (WORK-relative artifacts) are read and decoded by TensorFlow
(``tf.io.read_file`` + ``decode_image``) in parallel; source files, zip members and inline FER2013
rows are decoded by ``pipeline.images.Decoded`` (EXIF applied) in a generator. Either way the decoded,
resized uint8 images are cached in memory after the first epoch, then shuffled, batched, prefetched.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.base import split_key

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FALLBACK = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Sample:
    """One training image: where to read it and what it is.

    ``path`` is set for files TensorFlow reads directly; otherwise ``source`` is
    ``(path, member, data)`` for ``pipeline.sources.read_item``-style reading.
    """

    key: str
    label: str
    split: str
    path: str = ""
    source: tuple[str, str, bytes] | None = None


def key_hash(text: str, seed: int = 0) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{text}".encode()).digest()[:8], "big")


def locate(records: Sequence[dict[str, Any]], work: Path) -> dict[str, tuple[str, tuple[str, str, bytes] | None]]:
    """key -> (plain file path for TensorFlow, or "" with a (path, member, data) source to decode).

    WORK-relative artifacts are read by TensorFlow; anything else (absolute source paths that may
    carry EXIF orientation, ``zip::member`` sources, FER2013 CSV rows) is looked up in the ingest
    manifest and decoded in Python.
    """
    out: dict[str, tuple[str, tuple[str, str, bytes] | None]] = {}
    pending = []
    for r in records:
        f = str(r.get("file") or "")
        p = Path(f)
        if f and "::" not in f and not p.is_absolute() and (work / p).is_file():
            out[r["key"]] = (str(work / p), None)
        else:
            pending.append(r)
    if pending:
        from manifests.store import Store

        items = {i["key"]: i for i in Store(work).read_items()}
        for r in pending:
            f = str(r.get("file") or "")
            it = items.get(split_key(r["key"])[0])
            if it is not None and (it["member"] or it["data"] or it["path"]):
                out[r["key"]] = ("", (it["path"], it["member"], it["data"] or b""))
            elif f and "::" not in f and Path(f).is_file():
                out[r["key"]] = ("", (f, "", b""))
            else:
                from pipeline.config import ConfigError

                raise ConfigError(f"train: cannot find the image of {r['key']} ({f or 'no file'}); re-run the earlier stages")
    return out


def subset(records: list[dict[str, Any]], limit: int, seed: int) -> list[dict[str, Any]]:
    """At most *limit* records, each label proportionally, the lowest key hashes first."""
    if not limit or len(records) <= limit:
        return records
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_label[r["label"]].append(r)
    # Largest-remainder quotas: proportional per label, summing to exactly *limit*.
    exact = {lab: limit * len(rs) / len(records) for lab, rs in by_label.items()}
    quota = {lab: int(q) for lab, q in exact.items()}
    for lab in sorted(exact, key=lambda lab: (quota[lab] - exact[lab], lab))[: limit - sum(quota.values())]:
        quota[lab] += 1
    keep = []
    for lab, rs in by_label.items():
        rs.sort(key=lambda r: (key_hash(r["key"], seed), r["key"]))
        keep += rs[: quota[lab]]
    return sorted(keep, key=lambda r: r["key"])


def fallback_split(records: Sequence[dict[str, Any]], seed: int) -> dict[str, str]:
    """Deterministic stratified 80/10/10 split: per label, units ordered by hash, then cut.

    A unit is the record's group (person) when it has one, so one person's images never straddle
    splits within a label; the split stage does this properly across labels.
    """
    units: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        units[r["label"]][r.get("group") or r["key"]].append(r["key"])
    out = {}
    for groups in units.values():
        order = sorted(groups, key=lambda g: (key_hash(g, seed), g))
        total = sum(len(groups[g]) for g in order)
        done = 0
        for g in order:
            frac = done / total
            split = "train" if frac < FALLBACK[0] else "val" if frac < FALLBACK[0] + FALLBACK[1] else "test"
            for k in groups[g]:
                out[k] = split
            done += len(groups[g])
    return out


def samples(records: Sequence[dict[str, Any]], work: Path, seed: int) -> tuple[list[Sample], str]:
    """Labelled samples with their split; returns (samples sorted by key, where the split came from)."""
    labelled = [r for r in records if r.get("label")]
    if len(labelled) < len(records):
        log.warning("train: %d record(s) without a label are not trained on", len(records) - len(labelled))
    given = {r["key"]: str((r.get("metrics") or {}).get("split") or "") for r in labelled}
    odd = sorted({s for s in given.values() if s and s not in SPLITS})
    if odd:
        from pipeline.config import ConfigError

        raise ConfigError(f"train: unknown split name(s) {', '.join(odd)}; expected train, val, test")
    if not any(given.values()):
        splits = fallback_split(labelled, seed)
        origin = "train-stage fallback: stratified 80/10/10 by key hash"
        log.info("train: no split column (run the split stage for leak-free splits); using a stratified 80/10/10 split "
                 "by key hash")
    else:
        missing = [k for k, s in given.items() if not s]
        if missing:
            log.warning("train: %d record(s) have no split; they go to train", len(missing))
        splits = {k: s or "train" for k, s in given.items()}
        origin = "split stage"
    if not any(s == "val" for s in splits.values()):
        # Callbacks need validation data: carve 10% of train by key hash; the test split stays untouched.
        train = [r for r in labelled if splits[r["key"]] == "train"]
        for k, s in fallback_split(train, seed + 1).items():
            if s == "test":
                splits[k] = "val"
        origin += "; val carved from train (10%)"
        log.info("train: no val split; using 10%% of train for validation")
    where = locate(labelled, work)
    out = []
    for r in sorted(labelled, key=lambda r: r["key"]):
        path, src = where[r["key"]]
        out.append(Sample(r["key"], r["label"], splits[r["key"]], path, src))
    return out, origin


def class_weights(counts: Counter[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Loss weights per class index from training counts (mean weight 1 over the samples)."""
    if mode == "none":
        return None
    total = sum(counts.values())
    raw = {i: total / (n_classes * max(counts[i], 1)) for i in range(n_classes)}
    if mode == "sqrt":
        raw = {i: w ** 0.5 for i, w in raw.items()}
    norm = sum(raw[i] * counts[i] for i in range(n_classes)) / max(total, 1)
    return {i: round(w / norm, 6) for i, w in raw.items()}


def decode_py(source: tuple[str, str, bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """One source image as HxWxC uint8 at *shape* (EXIF applied, area-resized)."""
    import cv2

    from pipeline.images import Decoded, to_gray, to_rgb
    from pipeline.sources.tree import read_bytes

    path, member, data = source
    img = Decoded(lambda: data or read_bytes(path, member))
    h, w, c = shape
    a = img.at_most(max(h, w) * 2)
    a = to_gray(a)[:, :, None] if c == 1 else to_rgb(a)
    if a.shape[:2] != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
    return a.reshape(h, w, c)


def dataset(items: Sequence[Sample], labels: Sequence[str], shape: tuple[int, int, int], *,
            batch: int, shuffle: bool, seed: int) -> Any:
    """A batched tf.data pipeline of (float32 pixels 0-255, int label) for *items*."""
    import tensorflow as tf

    h, w, c = shape
    index = {name: i for i, name in enumerate(labels)}
    files = [s for s in items if s.path]
    others = [s for s in items if not s.path]
    parts = []
    if files:
        def load(path: Any, y: Any) -> tuple[Any, Any]:
            img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            if c == 1:
                img = tf.image.rgb_to_grayscale(img)
            img = tf.image.resize(img, (h, w), method="area")
            return tf.cast(tf.round(img), tf.uint8), y

        ds = tf.data.Dataset.from_tensor_slices(([s.path for s in files], np.array([index[s.label] for s in files], np.int32)))
        parts.append(ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    if others:
        def gen() -> Iterator[tuple[np.ndarray, int]]:
            for s in others:
                assert s.source is not None
                yield decode_py(s.source, shape), index[s.label]

        gen_ds = tf.data.Dataset.from_generator(gen, output_signature=(
            tf.TensorSpec((h, w, c), tf.uint8), tf.TensorSpec((), tf.int32)))
        # A known length lets Keras count steps per epoch (else it warns the input "ran out of data").
        parts.append(gen_ds.apply(tf.data.experimental.assert_cardinality(len(others))))
    ds = parts[0] if len(parts) == 1 else parts[0].concatenate(parts[1])
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(max(len(items), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)



def input_detail(items: Sequence[Sample], seed: int = 0, n: int = 256) -> tuple[int, int] | None:
    """(median px of detail across, median shorter side) of up to *n* of *items*, read as the quality
    stage reads an uncropped image (``stages.quality.face_detail``); None without items. Logs a
    warning when the detail is under half the size: an image enlarged from 12 px reads about 12."""
    from pipeline.images import Decoded, DecodeError
    from pipeline.sources.tree import read_bytes
    from stages.quality import SIDE, face_detail

    chosen = sorted(items, key=lambda s: (key_hash(s.key, seed), s.key))[:n]
    found, sides = [], []
    for s in chosen:
        path, member, data = s.source or (s.path, "", b"")
        img = Decoded(lambda path=path, member=member, data=data: data or read_bytes(path, member))
        try:
            pixels = img.at_most(SIDE)
        except DecodeError:  # an unreadable image fails training later, with its name
            continue
        found.append(face_detail(pixels, min(img.size)))
        sides.append(min(img.size))
    if not found:
        return None
    detail, side = int(np.median(found)), int(np.median(sides))
    if detail < side / 2:
        log.warning("train: the training images resolve about %d px across at a size of %d px (medians of a sample): they look "
                    "enlarged from smaller images or smoothed, and accuracy published for sharp copies of this data will not "
                    "transfer", detail, side)
    return detail, side
