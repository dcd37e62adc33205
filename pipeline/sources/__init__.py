"""Dataset layouts -> items. ``ingest`` lists the input once and hands it to one layout."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from pipeline.sources import aihub, fer2013, folder
from pipeline.sources.base import Ingest, Ingested, SourceOptions, csv_rows, item_of, item_of_row, read_item, read_text
from pipeline.sources.tree import IMAGE_SUFFIXES, Entry, walk

__all__ = ["LAYOUTS", "Ingest", "Ingested", "SourceOptions", "csv_rows", "detect", "ingest", "item_of", "item_of_row", "read_item",
           "read_text", "signature"]

LAYOUTS = ("auto", "folder", "aihub", "fer2013")


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


#: What to do when every image of the input is refused for one reason, per layout.
_HINTS = {
    ("folder", "unlabeled"): "the folder layout takes an image's label from its first-level folder (RAW/happy/*.jpg); "
                             "images right in RAW, or in folders --labels leaves out, have none",
    ("aihub", "unlabeled"): "no image matched a record of the label JSON files by file name (--layout folder "
                            "takes labels from folder names instead)",
    ("fer2013", "unlabeled"): "the fer2013 layout reads fer2013.csv or <split>/<class>/*.jpg folders",
}


def nothing_kept(result: Ingested) -> str:
    """A warning when the input has images and ingest refused every one of them (else ""): the
    counts per reason and, where one reason refused them all, what the layout expected."""
    if result.items or not result.rejected:
        return ""
    reasons = Counter(reason for _, reason, _ in result.rejected)
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    hint = _HINTS.get((result.layout, next(iter(reasons))), "") if len(reasons) == 1 else ""
    return f"ingest refused every image ({counts}): nothing to process" + (f"; {hint}" if hint else "")
