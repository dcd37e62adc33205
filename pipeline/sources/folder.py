"""Folder-per-class layout: the label is the first-level folder name (through the alias table)."""

from __future__ import annotations

from pipeline.sources.base import Ingested, SourceOptions, item_of
from pipeline.sources.tree import IMAGE_SUFFIXES, Entry


def ingest(entries: list[Entry], opts: SourceOptions) -> Ingested:
    out = Ingested("folder")
    for e in entries:
        parts = e.key.split("/")
        label = opts.canonical(parts[0]) if len(parts) > 1 else ""
        item = item_of(e, label)
        if e.error:
            out.rejected.append((item, *e.error))
        elif e.suffix not in IMAGE_SUFFIXES:
            out.ignored.append(e.key)
        elif why := opts.refuse(label):
            out.rejected.append((item, "unlabeled", why if label else "not inside a class folder"))
        else:
            out.items.append(item)
    return out
