"""FER2013: ``fer2013.csv`` (emotion,pixels,Usage) or the ``<split>/<class>/*.jpg`` folder layout."""

from __future__ import annotations

import numpy as np

from pipeline.sources.base import Ingested, SourceOptions, csv_rows, item_of
from pipeline.sources.tree import IMAGE_SUFFIXES, Entry
from stages.base import Item
from stages.images import encode_png

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val",
    "test": "test", "privatetest": "test",
}


def split_of(key: str) -> str | None:
    """Source split of ``.../<split>/<class>/<file>`` keys, else None."""
    parts = key.split("/")
    return SPLITS.get(parts[-3].lower()) if len(parts) >= 3 else None


def is_fer_csv(e: Entry) -> bool:
    from stages.images import read_bytes

    try:
        head = read_bytes(e.path, e.member)[:200].decode("utf-8-sig", "replace")
    except OSError:
        return False
    cols = head.split("\n", 1)[0].strip().lower().split(",")
    return "emotion" in cols and "pixels" in cols


def ingest(entries: list[Entry], opts: SourceOptions) -> Ingested:
    out = Ingested("fer2013")
    for e in entries:
        if e.error:
            out.rejected.append((item_of(e), *e.error))
        elif e.suffix == ".csv" and is_fer_csv(e):
            _csv(e, opts, out)
        elif e.suffix in IMAGE_SUFFIXES:
            split = split_of(e.key)
            label = opts.canonical(e.key.split("/")[-2]) if split else ""
            item = item_of(e, label, meta={"source_split": split} if split else {})
            if why := opts.refuse(label):
                out.rejected.append((item, "unlabeled", why if split else "not inside <split>/<class>/"))
            else:
                out.items.append(item)
        else:
            out.ignored.append(e.key)
    return out


def _csv(e: Entry, opts: SourceOptions, out: Ingested) -> None:
    """Rows of a FER2013 CSV become items with their pixels inline (as PNG, 48x48 grayscale)."""
    stem = e.key[: -len(".csv")]
    for i, row in enumerate(csv_rows(e)):
        key = f"{stem}/{i:05d}"
        usage = (row.get("Usage") or row.get("usage") or "").strip()
        split = SPLITS.get(usage.lower())
        meta = {"source_split": split} if split else {}
        try:
            idx = int(row.get("emotion") or "")
            raw = CLASSES[idx] if 0 <= idx < len(CLASSES) else ""
        except ValueError:
            raw = ""
        label = opts.canonical(raw) if raw else ""
        base = Item(key, f"{e.source}#row{i + 1}", e.path, e.member, label, "", meta)
        try:
            px = np.array((row.get("pixels") or "").split(), dtype=np.uint8)
            side = round(len(px) ** 0.5)
            if side == 0 or side * side != len(px):
                raise ValueError(f"{len(px)} pixel values is not a square image")
        except (ValueError, OverflowError) as err:
            out.rejected.append((base, "decode_error", f"pixels: {err}"))
            continue
        if why := opts.refuse(label):
            out.rejected.append((base, "unlabeled", why if raw else f"emotion {row.get('emotion')!r} unknown"))
            continue
        out.items.append(Item(key, base.source, "", "", label, "", meta, encode_png(px.reshape(side, side))))
