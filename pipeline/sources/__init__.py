"""Dataset layouts -> items. ``ingest`` lists the input once and hands it to one layout."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.sources import aihub, fer2013, folder
from pipeline.sources.tree import IMAGE_SUFFIXES, Entry, read_bytes, walk
from stages.base import Item

LAYOUTS = ("auto", "folder", "aihub", "fer2013")


@dataclass
class Ingested:
    """What a layout made of the input.

    Attributes:
        items: the items to process, sorted by key.
        rejected: items refused at ingest, with reason and detail.
        notes: one-line facts for the run summary (ignored files, records without images, ...).
        missing: label records whose image is not in the input (AIHub).
        ignored: keys of the input files that are not images (nor label files), listed in reports/ignored.csv.
    """

    layout: str
    items: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    signature: str = ""


Ingest = Callable[[list[Entry], "SourceOptions"], Ingested]


@dataclass(frozen=True)
class SourceOptions:
    """Source settings (``[source]`` in the config file)."""

    layout: str = "auto"
    aliases: tuple[tuple[str, str], ...] = ()
    labels: tuple[str, ...] = ()
    label_policy: str = "majority"

    def canonical(self, raw: str, defaults: dict[str, str] | None = None) -> str:
        table = dict(defaults or {})
        table.update(self.aliases)
        return table.get(raw, raw)

    def refuse(self, label: str) -> str:
        """Why *label* is not kept ("" when it is)."""
        if not label:
            return "no label"
        if self.labels and label not in self.labels:
            return f"label {label!r} is not in the label list"
        return ""


def detect(entries: list[Entry]) -> tuple[str, str]:
    """Pick a layout from what the input holds; returns (layout, why)."""
    keys = [e.key for e in entries]
    if any("[원천]" in k or "[라벨]" in k or "EMOIMG_" in k for k in keys):
        return "aihub", "found AIHub [원천]/[라벨] EMOIMG folders"
    for e in entries:
        if e.suffix == ".csv" and not e.error and fer2013.is_fer_csv(e):
            return "fer2013", f"found a FER2013 CSV ({e.key})"
    images = [e for e in entries if e.suffix in IMAGE_SUFFIXES]
    if images and sum(fer2013.split_of(e.key) is not None for e in images) >= 0.9 * len(images):
        return "fer2013", "found <split>/<class>/ folders (train/test)"
    return "folder", "labels from first-level folder names"


def signature(entries: list[Entry]) -> str:
    """Hash of the listing (names, sizes, times): a changed input invalidates every stage."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.key}\0{e.path}\0{e.member}\0{e.size}\0{e.mtime}\0{e.error}\n".encode())
    return h.hexdigest()


def ingest(root: Path, opts: SourceOptions) -> Ingested:
    """List *root* and turn it into items with the chosen (or detected) layout."""
    entries = list(walk(root))
    layout, why = (opts.layout, "") if opts.layout != "auto" else detect(entries)
    impl: dict[str, Ingest] = {"folder": folder.ingest, "aihub": aihub.ingest, "fer2013": fer2013.ingest}
    result = impl[layout](entries, opts)
    result.layout = layout
    if why:
        result.notes.insert(0, f"layout auto: picked {layout!r} ({why})")
    result.signature = signature(entries)
    result.items.sort(key=lambda i: i.key)
    result.rejected.sort(key=lambda r: r[0].key)
    result.ignored.sort()
    if result.ignored:
        result.notes.append(f"ignored {len(result.ignored)} non-image file(s), listed in reports/ignored.csv")
    return result


def item_of(e: Entry, label: str = "", group: str = "", meta: dict | None = None) -> Item:
    return Item(e.key, e.source, e.path, e.member, label, group, meta or {})


def read_item(item: Item) -> bytes:
    """Encoded bytes of an item: inline data, a zip member or a file."""
    return item.data if item.data else read_bytes(item.path, item.member)


def read_text(e: Entry) -> str:
    data = read_bytes(e.path, e.member)
    return data.decode("utf-8-sig")


def csv_rows(e: Entry) -> csv.DictReader:
    return csv.DictReader(io.StringIO(read_text(e)))
