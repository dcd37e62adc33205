"""AIHub Korean emotion layout ("한국인 감정인식을 위한 복합 영상").

Images in ``[원천]EMOIMG_<감정>_TRAIN_xx`` folders or zip parts; labels in ``[라벨]EMOIMG_<감정>_TRAIN``
JSON files (a list of records: filename, gender, age, isProf, faceExp_uploader, bg_uploader and
annot_A/B/C each {boxes:{minX,minY,maxX,maxY}, faceExp, bg}). The file name's hash prefix is the
person.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from pipeline.sources.base import Ingested, SourceOptions, item_of, read_text
from pipeline.sources.tree import IMAGE_SUFFIXES, Entry, nfc

EMOTIONS = {
    "기쁨": "happy",
    "당황": "embarrassed",
    "분노": "angry",
    "불안": "anxious",
    "상처": "hurt",
    "슬픔": "sad",
    "중립": "neutral",
}
POLICIES = ("uploader", "majority", "unanimous")
ANNOTATORS = ("A", "B", "C")
_SPLIT = re.compile(r"EMOIMG_[^/_]+_(TRAIN|VALID|VAL|TEST)", re.I)
_SPLITS = {"TRAIN": "train", "VALID": "val", "VAL": "val", "TEST": "test"}


def _box(b: Any) -> list[float] | None:
    try:
        x0, y0, x1, y1 = (float(b[k]) for k in ("minX", "minY", "maxX", "maxY"))
    except (TypeError, KeyError, ValueError):
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def decide(rec: dict[str, Any], policy: str) -> tuple[str, str]:
    """(raw label, why-refused) for one record under a label policy."""
    if policy == "uploader":
        return str(rec.get("faceExp_uploader") or ""), ""
    votes = [str((rec.get(f"annot_{a}") or {}).get("faceExp") or "") for a in ANNOTATORS]
    label, n = Counter(v for v in votes if v).most_common(1)[0] if any(votes) else ("", 0)
    need = 3 if policy == "unanimous" else 2
    if n < need:
        return "", f"annotators A/B/C said {'/'.join(v or '-' for v in votes)} ({policy} needed)"
    return label, ""


def load_records(entries: list[Entry]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Label records by NFC file name from every JSON entry; notes on what could not be read."""
    records: dict[str, dict[str, Any]] = {}
    notes = []
    for e in entries:
        if e.suffix != ".json" or e.error:
            continue
        try:
            data = json.loads(read_text(e))
        except (OSError, ValueError) as err:
            notes.append(f"label file {e.key} unreadable: {err}")
            continue
        if not isinstance(data, list):
            notes.append(f"label file {e.key} is not a list of records; ignored")
            continue
        for rec in data:
            if isinstance(rec, dict) and rec.get("filename"):
                records.setdefault(nfc(str(rec["filename"])), rec)
    return records, notes


def ingest(entries: list[Entry], opts: SourceOptions) -> Ingested:
    if opts.label_policy not in POLICIES:
        raise ValueError(f"label_policy must be one of {', '.join(POLICIES)}")
    out = Ingested("aihub")
    records, out.notes = load_records(entries)
    seen: set[str] = set()
    for e in entries:
        if e.error:
            out.rejected.append((item_of(e), *e.error))
            continue
        if e.suffix not in IMAGE_SUFFIXES:
            if e.suffix != ".json":
                out.ignored.append(e.key)
            continue
        name = e.key.rsplit("/", 1)[-1]
        rec = records.get(name)
        group = name.split("_", 1)[0]
        m = _SPLIT.search(e.key)
        meta: dict[str, Any] = {"source_split": _SPLITS[m.group(1).upper()]} if m else {}
        if rec is None:
            out.rejected.append((item_of(e, "", group, meta), "unlabeled", "no label record for this file name"))
            continue
        seen.add(name)
        meta.update(_meta(rec, opts))
        raw, why = decide(rec, opts.label_policy)
        label = opts.canonical(raw, EMOTIONS)
        item = item_of(e, label, group, meta)
        if why:
            out.rejected.append((item, "annotator_disagreement", why))
        elif why := opts.refuse(label):
            out.rejected.append((item, "unlabeled", why))
        else:
            out.items.append(item)
    out.missing = sorted(set(records) - seen)
    if out.missing:
        out.notes.append(f"{len(out.missing)} label record(s) name an image that is not in the input")
    return out


def _meta(rec: dict[str, Any], opts: SourceOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "gender": rec.get("gender"),
        "age": rec.get("age"),
        "is_prof": rec.get("isProf"),
        "background": rec.get("bg_uploader"),
        "uploader_label": opts.canonical(str(rec.get("faceExp_uploader") or ""), EMOTIONS),
    }
    for a in ANNOTATORS:
        ann = rec.get(f"annot_{a}") or {}
        meta[f"annot_{a}_label"] = opts.canonical(str(ann.get("faceExp") or ""), EMOTIONS)
        meta[f"annot_{a}_box"] = _box(ann.get("boxes"))
    return meta
