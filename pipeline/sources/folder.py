"""Folder-per-class layout: the label is the first-level folder name (through the alias table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.sources.tree import IMAGE_SUFFIXES, Entry

if TYPE_CHECKING:
    from pipeline.sources import Ingested, SourceOptions


def ingest(entries: list[Entry], opts: SourceOptions) -> Ingested:
    from pipeline.sources import Ingested, item_of

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
