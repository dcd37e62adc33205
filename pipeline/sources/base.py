"""What every dataset layout shares: the ingest result, the source options, items made from
listed entries or stored rows, and reading their bytes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.sources.tree import Entry
from stages.base import Item
from stages.images import read_bytes


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


def item_of_row(r: dict[str, Any]) -> Item:
    """The item an ingest manifest row records."""
    return Item(r["key"], r["source"], r["path"], r["member"], r["label"], r["group"], json.loads(r["meta"]), r["data"] or b"")
