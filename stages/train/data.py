"""Training input: records -> samples (file, label, split) -> uint8 arrays -> Keras batches.

Every image, whether an artifact the pipeline wrote, a source file, a zip member or an inline
FER2013 row, is decoded by ``stages.images.Decoded`` (EXIF, bomb guard) and brought to the model's
input by ``stages.images.model_input``, the resize ``predict`` uses too. The decoded set is one
uint8 array per split, memory-mapped from WORK/model/cache/ (decoded once, reused on resume), fed to
Keras by a ``PyDataset``: the same batches for the TensorFlow, JAX and PyTorch backends (TensorFlow
draws them by index through ``tf_stream``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from manifests.keys import split_key
from manifests.store import Store
from stages import progress
from stages.base import ConfigError
from stages.images import Decoded, DecodeError, model_input, read_bytes
from stages.quality import SIDE, face_detail
from stages.split import SplitParams, assign

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One training image: where to read it and what it is.

    ``path`` is set for plain files (the pipeline's artifacts); otherwise ``source`` is
    ``(path, member, data)``: a source file, a zip member or inline bytes (FER2013 CSV rows).
    """

    key: str
    label: str
    split: str
    path: str = ""
    source: tuple[str, str, bytes] | None = None


def key_hash(text: str, seed: int = 0) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{text}".encode()).digest()[:8], "big")


def locate(records: Sequence[dict[str, Any]], work: Path) -> dict[str, tuple[str, tuple[str, str, bytes] | None]]:
    """key -> (plain file path, or "" with a (path, member, data) source).

    WORK-relative artifacts (face crops, compressed copies) are plain files; anything else (source
    paths, ``zip::member`` sources, FER2013 CSV rows) is looked up in the ingest manifest.
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
        items = {i["key"]: i for i in Store(work).read_items()}
        for r in pending:
            f = str(r.get("file") or "")
            it = items.get(split_key(r["key"])[0])
            if it is not None and (it["member"] or it["data"] or it["path"]):
                out[r["key"]] = ("", (it["path"], it["member"], it["data"] or b""))
            elif f and "::" not in f and Path(f).is_file():
                out[r["key"]] = ("", (f, "", b""))
            else:
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


def split_stage_split(records: Sequence[dict[str, Any]], seed: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """key -> split, made by the split stage's own algorithm (``stages.split.assign``) with its
    defaults: stratified by label, each person and each duplicate group in one split."""
    recs = sorted(records, key=lambda r: r["key"])
    return dict(zip((r["key"] for r in recs), assign(recs, SplitParams(ratios=ratios, seed=seed)), strict=True))


def samples(records: Sequence[dict[str, Any]], work: Path, seed: int) -> tuple[list[Sample], str]:
    """Labelled samples with their split; returns (samples sorted by key, where the split came from)."""
    labelled = [r for r in records if r.get("label")]
    if len(labelled) < len(records):
        log.warning("train: %d record(s) without a label are not trained on", len(records) - len(labelled))
    given = {r["key"]: str((r.get("metrics") or {}).get("split") or "") for r in labelled}
    odd = sorted({s for s in given.values() if s and s not in SPLITS})
    if odd:
        raise ConfigError(f"train: unknown split name(s) {', '.join(odd)}; expected train, val, test")
    if not any(given.values()):
        splits = split_stage_split(labelled, seed)
        origin = "split stage defaults (no split in the workspace)"
        log.warning("train: this workspace has no split (the split stage has not run); splitting the %d images as "
                    "--stages split does with its defaults: 80/10/10, stratified by label, each person and duplicate "
                    "group in one split", len(labelled))
    else:
        missing = [k for k, s in given.items() if not s]
        if missing:
            log.warning("train: %d record(s) have no split; they go to train", len(missing))
        splits = {k: s or "train" for k, s in given.items()}
        origin = "split stage"
    if not any(s == "val" for s in splits.values()):
        # Callbacks need validation data: carve 10% of train by key hash; the test split stays untouched.
        train = [r for r in labelled if splits[r["key"]] == "train"]
        for k, s in split_stage_split(train, seed, (0.9, 0.1)).items():
            splits[k] = s
        origin += "; val carved from train (10%)"
        log.warning("train: no val split; using 10%% of train for validation, split as the split stage does")
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


def read(s: Sample) -> bytes:
    """The encoded bytes of a sample: a file, a zip member or inline data (FER2013 CSV rows)."""
    if s.source is None:
        return read_bytes(s.path)
    path, member, data = s.source
    return data or read_bytes(path, member)


def decode(s: Sample, shape: tuple[int, int, int]) -> np.ndarray:
    """One sample as HxWxC uint8 at *shape*: the pipeline's one decode path (EXIF applied, bomb
    guard, a reduced DCT decode for big JPEGs) and the one model-input resize that ``predict`` uses.
    An undecodable image is a ConfigError naming it: a curated workspace should hold none."""
    h, w, _ = shape
    img = Decoded(lambda: read(s))
    try:
        return model_input(img.at_most(max(h, w) * 2), shape)
    except (DecodeError, OSError) as e:
        raise ConfigError(f"train: cannot read the image of {s.key} ({e}); re-run the earlier stages") from None


def _source_bytes(path: str, member: str, data: bytes) -> bytes:
    return data or read_bytes(path, member)


def cache_key(items: Sequence[Sample], shape: tuple[int, int, int]) -> str:
    """Names the decoded array of *items*: their keys, where they are read from and what is there
    now (file size and modification time, or the inline bytes), so a re-made crop is decoded anew."""
    h = hashlib.sha256(f"{CACHE_VERSION}{shape}".encode())
    for s in items:
        path, member, data = s.source or (s.path, "", b"")
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else hashlib.blake2b(data, digest_size=8).hexdigest()
        h.update(f"{s.key}\0{path}\0{member}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def load(items: Sequence[Sample], shape: tuple[int, int, int], cache: Path | None = None, *, workers: int = 0,
         desc: str = "decoding") -> np.ndarray:
    """Every item decoded to one (N, H, W, C) uint8 array, in *items* order.

    With *cache* (a folder), the array is a memory-mapped ``.npy`` file there, written once (to a
    temporary name, then renamed) and reused by later runs and resumes: sets larger than memory
    train from the page cache. Decoding runs in threads (PIL and OpenCV release the GIL).
    """
    n = len(items)
    path = cache / f"{cache_key(items, shape)}.npy" if cache is not None else None
    if path is not None and path.is_file():
        try:
            arr: np.ndarray = np.load(path, mmap_mode="r")
            if arr.shape == (n, *shape) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass
        path.unlink(missing_ok=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        out: np.ndarray = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
    else:
        out = np.empty((n, *shape), np.uint8)
    chunk = 256
    bar = progress.bar(n, desc, "img", leave=False)

    def work(start: int) -> int:
        for i in range(start, min(start + chunk, n)):
            out[i] = decode(items[i], shape)
        return min(start + chunk, n) - start

    try:
        with ThreadPoolExecutor(max(1, workers or min(8, os.cpu_count() or 1))) as pool:
            for done in pool.map(work, range(0, n, chunk)):
                bar.update(done)
    finally:
        bar.close()
    if path is None:
        return out
    assert isinstance(out, np.memmap)
    out.flush()  # then rename: the cache file appears complete or not at all
    os.replace(tmp, path)
    cached: np.ndarray = np.load(path, mmap_mode="r")
    return cached


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    hot: np.ndarray = np.eye(n, dtype=np.float32)[y]
    return hot


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly flipped, rotated (+-10 degrees), scaled (0.9-1.1) and shifted (+-10%) copy of each
    uint8 image of *x* (N, H, W, C), borders reflected: mild geometry, as faces come aligned."""
    import cv2

    n, h, w, c = x.shape
    out = np.empty_like(x)
    flip = np.asarray(rng.random(n)) < 0.5
    angle = np.asarray(rng.uniform(-10, 10, n))
    scale = np.asarray(rng.uniform(0.9, 1.1, n))
    shift = rng.uniform(-0.1, 0.1, (n, 2)) * (w, h)
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(angle[i]), float(scale[i]))
        m[:, 2] += shift[i]
        img = x[i, :, ::-1] if flip[i] else x[i]
        out[i] = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101).reshape(h, w, c)
    return out


def erase(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Random erasing: with probability *p*, a rectangle of 2-25% of each image of *x* (N, H, W, C),
    aspect 0.3-3.3, filled with uniform noise (in place; *x* is returned). The network cannot lean on
    one region (a mouth, an eyebrow) alone."""
    n, h, w, c = x.shape
    hit = np.asarray(rng.random(n)) < p
    area = np.asarray(rng.uniform(0.02, 0.25, n)) * h * w
    aspect = np.exp(np.asarray(rng.uniform(np.log(0.3), np.log(3.3), n)))
    corner = np.asarray(rng.random((n, 2)))
    for i in np.flatnonzero(hit):
        eh = int(min(h, max(1, round(float(np.sqrt(area[i] * aspect[i]))))))
        ew = int(min(w, max(1, round(float(np.sqrt(area[i] / aspect[i]))))))
        top, left = int(corner[i, 0] * (h - eh + 1)), int(corner[i, 1] * (w - ew + 1))
        x[i, top:top + eh, left:left + ew] = rng.integers(0, 256, (eh, ew, c), dtype=np.uint8)
    return x


def batches(x: np.ndarray, y: np.ndarray, n_classes: int, *, batch: int, shuffle: bool, seed: int, first_epoch: int = 0,
            weights: dict[int, float] | None = None, augmented: bool = False, erasing: float = 0.0, endless: bool = False) -> Any:
    """A ``keras.utils.PyDataset`` of (float32 pixels 0-255, one-hot labels[, sample weights]) batches.

    Backend-neutral (TensorFlow, JAX or PyTorch Keras): augmentation (*augmented*) is done here, in
    NumPy and OpenCV, not by backend-specific layers in the model. With *shuffle*, epoch *e* visits
    the images in an order drawn from (*seed*, *e*) alone, and batch *i* is augmented from (*seed*,
    *e*, *i*), so a resumed run sees the same batches as an uninterrupted one.

    *endless*: one stream over every epoch from *first_epoch* on (index ``k`` is batch ``k % len`` of
    epoch ``first_epoch + k // len``), for ``fit(steps_per_epoch=len)``: Keras then keeps one
    iterator for the whole run. A finite one is iterated afresh every epoch, and under TensorFlow
    each new iterator stalled the first step of its epoch (seconds to a minute on a busy machine).
    """
    import keras

    steps = -(-len(y) // batch)

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = first_epoch
            self.order = self._order(first_epoch)
            self.weighted = weights is not None
            # Endless items are a pure function of their index, drawn from threads (tf_stream maps them in parallel).
            self.orders = functools.lru_cache(maxsize=4)(self._order)

        def _order(self, epoch: int) -> np.ndarray:
            if not shuffle:
                return np.arange(len(y))
            return np.random.default_rng([seed, epoch]).permutation(len(y))

        def __len__(self) -> int:
            return steps

        @property
        def num_batches(self) -> int | None:
            return None if endless else steps

        def __getitem__(self, k: int) -> tuple[np.ndarray, ...]:
            xb, *rest = self.raw_at(k)
            return (xb.astype(np.float32), *rest)

        def raw_at(self, k: int) -> tuple[np.ndarray, ...]:
            """Item *k* with its pixels as uint8 (``tf_stream`` makes them float32 in the graph)."""
            if not endless:
                return self.raw(self.epoch, self.order, k)
            epoch, i = first_epoch + k // steps, k % steps
            return self.raw(epoch, self.orders(epoch), i)

        def raw(self, epoch: int, order: np.ndarray, i: int) -> tuple[np.ndarray, ...]:
            """Batch *i* of *epoch* (visiting the images in *order*), its pixels as uint8."""
            idx = order[i * batch:(i + 1) * batch]
            xb = np.asarray(x[np.sort(idx)] if not shuffle else x[idx])
            if augmented:
                xb = augment(xb, np.random.default_rng([seed, epoch, i, 1]))
                if erasing:
                    xb = erase(xb, np.random.default_rng([seed, epoch, i, 2]), erasing)
            yi = y[np.sort(idx)] if not shuffle else y[idx]
            out: tuple[np.ndarray, ...] = (xb, one_hot(yi, n_classes))
            if weights is not None:
                out += (np.array([weights[int(c)] for c in yi], np.float32),)
            return out

        def on_epoch_end(self) -> None:
            if not endless:
                self.epoch += 1
                self.order = self._order(self.epoch)

    return Batches()


def input_detail(items: Sequence[Sample], seed: int = 0, n: int = 256) -> tuple[int, int] | None:
    """(median px of detail across, median shorter side) of up to *n* of *items*, read as the quality
    stage reads an uncropped image (``stages.quality.face_detail``); None without items. Logs a
    warning when the detail is under half the size: an image enlarged from 12 px reads about 12."""
    chosen = sorted(items, key=lambda s: (key_hash(s.key, seed), s.key))[:n]
    found, sides = [], []
    for s in chosen:
        path, member, data = s.source or (s.path, "", b"")
        img = Decoded(functools.partial(_source_bytes, path, member, data))
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


def fit_input(feed: Any, shape: tuple[int, ...], n_classes: int) -> Any:
    """What ``model.fit`` is given for *feed* (``batches``): the feed itself, or on the TensorFlow
    backend the same batches through ``tf_stream``."""
    import keras

    return tf_stream(feed, shape, n_classes) if keras.backend.backend() == "tensorflow" else feed


def tf_stream(feed: Any, shape: tuple[int, ...], n_classes: int) -> Any:
    """*feed* (``batches``; *shape*: an image's) as a ``tf.data.Dataset`` of the same batches in the
    same order, for the TensorFlow backend: an endless feed's whole stream, a finite one's current
    epoch (one pass). Keras hands a ``PyDataset`` to TensorFlow through ``Dataset.from_generator``,
    and on a 2-core CPU fer-vgg trained at 42-43 images/s that way against 67 with the batches drawn
    by index (``Dataset.range`` mapped through ``numpy_function``; batch *k* is a pure function of
    *k*), the rate of arrays in memory, with a third less CPU time (BENCHMARKS.md, train). The pixels
    cross as uint8 and become float32 in the graph."""
    import tensorflow as tf

    out = (tf.uint8, tf.float32, tf.float32) if feed.weighted else (tf.uint8, tf.float32)
    shapes = ((None, *shape), (None, n_classes), (None,))[:len(out)]

    def item(k: Any) -> Any:
        got = tf.numpy_function(lambda i: feed.raw_at(int(i)), [k], out, stateful=False)
        xb, *rest = (tf.ensure_shape(t, s) for t, s in zip(got, shapes, strict=True))
        return (tf.cast(xb, tf.float32), *rest)

    n = 2 ** 62 if feed.num_batches is None else len(feed)
    return tf.data.Dataset.range(n).map(item).prefetch(2)
