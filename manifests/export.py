"""Final outputs of a run: WORK/manifest.csv + .parquet (kept items) and reports/rejected.csv.

Every item ends with exactly one final status: the first stage (in stage order) that did not
keep it decides; an item whose shard never finished a stage is ``failed`` / ``worker_crash``.
The caller says what each stage of the run is (``StageInfo``: the stage classes themselves
qualify); nothing here imports a stage.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import stat
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.keys import split_key
from manifests.schema import FAILED, KEPT, MANIFEST_COLUMNS, REJECTED_COLUMNS, check_reason
from manifests.store import Store, atomic_write

log = logging.getLogger(__name__)
Row = dict[str, Any]


class StageInfo(Protocol):
    """What the export needs to know of one stage of a run (a registered stage class is one)."""

    @property
    def name(self) -> str: ...
    @property
    def per_item(self) -> bool: ...
    @property
    def per_dataset(self) -> bool: ...
    @property
    def produces_file(self) -> bool: ...
    @property
    def columns(self) -> tuple[str, ...]: ...


@dataclass
class Stats:
    """Counts for the summary and ``status``: per stage kept, and rejected/failed by reason."""

    items: int = 0
    ingest_rejected: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    final_kept: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    missing: int = 0
    ignored: int = 0


def final_rows(stages: Sequence[StageInfo], store: Store, *, upto: str | None = None,
               stats: Stats | None = None) -> Iterator[Row]:
    """One row per final item (children of split items included), in shard order.

    ``upto`` stops before that stage's dataset step (what a dataset step gets as input).
    """
    stats = stats if stats is not None else Stats()
    # With ``upto``, the stage's own per-item part is walked (its scores are what it decides on),
    # its decision and everything after it are not.
    names = [s.name for s in stages]
    stop = names.index(upto) if upto else len(stages)
    walked = stages[: stop + 1] if upto else stages
    item_stages = [s.name for s in walked if s.per_item]
    data_stages = [s.name for s in stages[:stop] if s.per_dataset]
    decided = {n: {r["key"]: r for r in store.read_dataset(n)} for n in data_stages}
    by_shard: dict[int, list[Row]] = defaultdict(list)
    for r in store.read_items():
        stats.items += 1
        if r["status"] == KEPT:
            by_shard[r["shard"]].append(r)
        else:
            stats.ingest_rejected[r["reason"]] += 1
            yield _base(r) | {"status": r["status"], "stage": "ingest", "reason": r["reason"], "detail": r["detail"]}
    for shard in sorted(by_shard):
        parts = {n: {o["key"]: o for o in store.read_part(n, shard)} if store.is_done(n, shard) else None for n in item_stages}
        for r in by_shard[shard]:
            yield from _walk(_base(r) | {"status": KEPT}, walked, parts, decided, stats)


def _base(r: Row) -> Row:
    return {"key": r["key"], "source": r["source"], "file": r["source"] if r["member"] or not r["path"] else r["path"],
            "label": r["label"], "group": r["group"], "meta": json.loads(r["meta"]), "metrics": {}}


def _walk(row: Row, stages: Sequence[StageInfo], parts: dict[str, dict[str, Row] | None],
          decided: dict[str, dict[str, Row]], stats: Stats) -> Iterator[Row]:
    live = [row]
    for stage in stages:
        name = stage.name
        nxt = []
        for cur in live:
            outs: list[Row | None] = []
            if name in parts:
                part = parts[name]
                if part is None:
                    outs = [None]
                elif cur["key"] in part:
                    outs = [part[cur["key"]]]
                else:
                    i = 0
                    while f"{cur['key']}#{i}" in part:
                        outs.append(part[f"{cur['key']}#{i}"])
                        i += 1
                    outs = outs or [None]
            for o in outs:
                if o is None:
                    stats.dropped[name][f"{FAILED}:worker_crash"] += 1
                    yield cur | {"status": FAILED, "stage": name, "reason": check_reason("worker_crash"),
                                 "detail": "the shard did not finish this stage"}
                    continue
                metrics = json.loads(o["metrics"])
                child = cur | {"key": o["key"], "metrics": cur["metrics"] | metrics}
                if o["artifact"] and stage.produces_file:
                    child["file"] = o["artifact"]
                if name == "compress" and o["status"] == KEPT:
                    stats.bytes_in += metrics.get("bytes_in", 0)
                    stats.bytes_out += metrics.get("bytes_out", 0)
                if o["status"] != KEPT:
                    stats.dropped[name][f"{o['status']}:{o['reason']}"] += 1
                    yield child | {"status": o["status"], "stage": name, "reason": o["reason"], "detail": o["detail"]}
                else:
                    nxt.append(child)
            if not outs and name not in parts:
                nxt.append(cur)
        live = []
        for cur in nxt:
            d = decided.get(name, {}).get(cur["key"])
            if d is not None and d["status"] != KEPT:
                stats.dropped[name][f"{d['status']}:{d['reason']}"] += 1
                yield cur | {"status": d["status"], "stage": name, "reason": d["reason"], "detail": d["detail"]}
                continue
            if d is not None:
                cur = cur | {"metrics": cur["metrics"] | json.loads(d["metrics"])}
            stats.kept[name] += 1
            live.append(cur)
    for cur in live:
        stats.final_kept += 1
        yield cur


def manifest_columns(stages: Sequence[StageInfo]) -> list[str]:
    cols = list(MANIFEST_COLUMNS)
    for s in stages:
        cols += [c for c in s.columns if c not in cols]
    return cols


def manifest_row(r: Row, cols: Sequence[str]) -> dict[str, Any]:
    m = r["metrics"]
    return {c: r[c] if c in ("key", "source", "file", "label", "group") else m.get(c, "") for c in cols}


def _csv_bytes(cols: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue().encode("utf-8")


def write(work: Path, stages: Sequence[StageInfo], store: Store, missing: Sequence[str] = (), *,
          link: str = "hardlink", read: Callable[[Row], bytes] | None = None,
          ignored: Sequence[str] = (), splits: Sequence[str] = ()) -> Stats:
    """Write manifest.csv, manifest.parquet, reports/rejected.csv (and missing_images.csv,
    ignored.csv), and the dataset/ tree when the run has a split column.

    Args:
        link: how the tree holds files: hardlink (copy where refused), symlink or copy.
        read: bytes of an ingest item row without a file of its own (zip member, FER2013 CSV row).
        ignored: input files that are not images (listed in reports/ignored.csv).
        splits: the split names of the run: each gets a folder per class, empty where it has none.
    """
    stats = Stats(missing=len(missing))
    kept: list[Row] = []
    dropped: list[Row] = []
    for r in final_rows(stages, store, stats=stats):
        (kept if r["status"] == KEPT else dropped).append(r)
    cols = manifest_columns(stages)
    kept.sort(key=lambda r: r["key"])
    dropped.sort(key=lambda r: r["key"])
    rows = [manifest_row(r, cols) for r in kept]
    atomic_write(work / "manifest.csv", _csv_bytes(cols, rows))
    table = pa.table({c: pa.array([_cell(r[c]) for r in rows], pa.string()) for c in cols})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write(work / "manifest.parquet", buf.getvalue())
    atomic_write(work / "reports" / "rejected.csv", _csv_bytes(REJECTED_COLUMNS, dropped))
    if missing:
        atomic_write(work / "reports" / "missing_images.csv", _csv_bytes(["filename"], ({"filename": m} for m in missing)))
    stats.ignored = len(ignored)
    if ignored or (work / "reports" / "ignored.csv").exists():
        atomic_write(work / "reports" / "ignored.csv", _csv_bytes(["file"], ({"file": f} for f in sorted(ignored))))
    if "split" in cols:
        write_tree(work, kept, store, link, read, splits)
    return stats


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def summary(stats: Stats, work: Path, seconds: float) -> str:
    """The one-screen end-of-run summary."""
    lines = [f"{stats.items} items: {stats.final_kept} kept, {stats.items - stats.final_kept} not kept ({seconds:.1f}s)"]
    if stats.ingest_rejected:
        lines.append(f"  ingest     refused {sum(stats.ingest_rejected.values())}: " + _reasons(stats.ingest_rejected))
    for name in list(dict.fromkeys([*stats.kept, *stats.dropped])):
        d = stats.dropped.get(name, Counter())
        lines.append(f"  {name:<10} kept {stats.kept[name]}" + (f", not kept {sum(d.values())}: {_reasons(d)}" if d else ""))
        if nf := sum(v for k, v in d.items() if k.endswith(":no_face")):
            seen = stats.kept[name] + sum(d.values())
            lines.append(f"  {'':<10} no face found in {nf} of {seen} items ({nf / seen:.0%}); "
                         "if they show faces, try another --detector")
    if stats.bytes_in:
        lines.append(f"  compress   {stats.bytes_in / 1e6:.1f} MB -> {stats.bytes_out / 1e6:.1f} MB "
                     f"({stats.bytes_in / max(stats.bytes_out, 1):.1f}x smaller) over the {stats.kept['compress']} image(s) compress kept")
    if stats.missing:
        lines.append(f"  {stats.missing} label record(s) without an image: reports/missing_images.csv")
    if stats.ignored:
        lines.append(f"  {stats.ignored} file(s) that are not images ignored: reports/ignored.csv")
    lines.append(f"manifest: {work / 'manifest.csv'}   rejected: {work / 'reports' / 'rejected.csv'}")
    lines.append(f"report: {work / 'reports' / 'index.html'}")
    return "\n".join(lines)


def _reasons(c: Counter[str]) -> str:
    return ", ".join(f"{k.split(':')[-1]} {v}" for k, v in c.most_common())


# -- WORK/dataset/<split>/<label>/ ------------------------------------------------------------
CLASSES_FILE = "classes.txt"  # dataset/classes.txt: the class folders in the order Keras and torchvision number them
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}


def write_tree(work: Path, rows: Iterable[Row], store: Store, mode: str = "hardlink",
               read: Callable[[Row], bytes] | None = None, splits: Sequence[str] = ()) -> Counter[str]:
    """Make WORK/dataset/<split>/<label>/<name> match the kept rows (Keras / ImageFolder layout).

    Every split folder holds a folder for every class, empty where the split has none of it: Keras
    and torchvision number classes by their sorted folder names, so a split lacking a class would
    number the others differently. dataset/classes.txt lists the classes in that order.

    Files are hardlinks to the image each row points at (copies where the file system refuses a
    link), symlinks or copies; files of earlier runs that are no longer wanted are removed, and
    those already right are left alone, so a re-run costs a directory walk. Rows are expected
    sorted by key: of two keys with the same file name in a folder, the first keeps it plain.
    Plain strings and os calls, not pathlib: this runs once per kept image.
    """
    base = os.path.realpath(work)
    root = os.path.join(base, "dataset")
    want: dict[str, tuple[str | None, Row]] = {}
    counts: Counter[str] = Counter()
    split_names, classes = set(splits), set()
    for r in rows:
        split, label = r["metrics"].get("split"), r["label"]
        if not split or not label:
            counts["skipped (no split or label)"] += 1
            continue
        split_names.add(_safe_name(str(split)))
        classes.add(_safe_name(label))
        folder = f"{_safe_name(str(split))}/{_safe_name(label)}/"
        src = _file_of(base, r["file"])
        # No file (a zip member, an inline FER2013 row): the key's suffix, or PNG (how rows are stored).
        suffix = os.path.splitext(src if src else split_key(r["key"])[0].rsplit("/", 1)[-1])[1].lower() or ".png"
        rel = folder + _tree_name(r["key"], suffix)
        if rel in want:
            rel = folder + _tree_name(r["key"], suffix, unique=True)
        want[rel] = (src, r)
    folders = {os.path.join(root, s, c) for s in split_names for c in classes}
    for dirpath, _dirs, files in os.walk(root):
        prefix = dirpath[len(root) + 1 :].replace(os.sep, "/")
        for f in files:
            if f"{prefix}/{f}" not in want and not (dirpath == root and f == CLASSES_FILE):
                os.unlink(os.path.join(dirpath, f))
                counts["removed"] += 1
    items: dict[str, Row] | None = None
    made: set[str] = set()
    for rel, (src, r) in want.items():
        dst = os.path.join(root, rel)
        folder = os.path.dirname(dst)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            if src is None:  # no file to link (a zip member, an inline FER2013 row): write its bytes
                if not os.path.exists(dst):
                    if items is None:
                        items = {i["key"]: i for i in store.read_items()}
                    it = items[split_key(r["key"])[0]]
                    if not it["data"] and read is None:
                        raise OSError(f"no reader for {it['source']}")
                    atomic_write(Path(dst), it["data"] or read(it))  # type: ignore[misc]
                    counts["written"] += 1
                continue
            if _up_to_date(src, dst, mode):
                counts["unchanged"] += 1
                continue
            counts[_place(src, dst, mode)] += 1
        except OSError as e:  # one unwritable file must not cost the manifest
            counts["failed"] += 1
            if counts["failed"] <= 3:
                log.warning("dataset tree: %s: %s", rel, e)
        if counts["copied"] == 1 and mode == "hardlink":
            mode = "copy"  # one refusal is the file system's answer for all of them
    for dirpath, dirs, files in os.walk(root, topdown=False):
        if not dirs and not files and dirpath != root and dirpath not in folders:
            os.rmdir(dirpath)
    for folder in sorted(folders):
        os.makedirs(folder, exist_ok=True)
    if classes:
        atomic_write(Path(root) / CLASSES_FILE, "".join(f"{c}\n" for c in sorted(classes)).encode("utf-8"))
    elif os.path.exists(os.path.join(root, CLASSES_FILE)):
        os.unlink(os.path.join(root, CLASSES_FILE))
    log.info("dataset tree %s: %s", root, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty")
    return counts


def _safe_name(s: str) -> str:
    s = s.replace("/", "_").replace("\\", "_").replace("\0", "_")
    return s if s not in ("", ".", "..") else f"_{s}"


def _tree_name(key: str, suffix: str, *, unique: bool = False) -> str:
    """The file name of *key* in its folder: its own, ``#n`` as ``_face<n>`` (as key_to_relpath)."""
    stem, face = split_key(key)
    stem = os.path.splitext(stem.rsplit("/", 1)[-1])[0] + (f"_face{face}" if face else "")
    tag = "_" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest() if unique else ""
    while len((stem + tag + suffix).encode()) > 200:  # file names are limited to 255 bytes
        stem, tag = stem[:-8], "_" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
    return stem + tag + suffix


def _file_of(base: str, file: str) -> str | None:
    """The image file a row points at (an artifact below WORK or a source file), or None."""
    if not file or "::" in file:
        return None
    p = file if os.path.isabs(file) else os.path.join(base, file)
    return p if os.path.isfile(p) else None


def _up_to_date(src: str, dst: str, mode: str) -> bool:
    try:
        if mode == "symlink":
            return os.readlink(dst) == os.path.relpath(src, os.path.dirname(dst))
        d = os.lstat(dst)
        if stat.S_ISLNK(d.st_mode):
            return False
        s = os.stat(src)
        if (s.st_ino, s.st_dev) == (d.st_ino, d.st_dev):
            return True
        return s.st_size == d.st_size and d.st_mtime_ns >= s.st_mtime_ns  # a copy made after the source
    except OSError:  # missing, or not a symlink
        return False


def _place(src: str, dst: str, mode: str) -> str:
    """Link, symlink or copy *src* to *dst* (replacing it atomically); returns what was done."""
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    done = "copied"
    if mode == "symlink":
        os.symlink(os.path.relpath(src, os.path.dirname(dst)), tmp)
        done = "symlinked"
    elif mode == "hardlink":
        try:
            os.link(src, tmp)
            done = "linked"
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
            log.info("dataset tree: hardlinks refused (%s); copying instead", e.strerror)
    if done == "copied":
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return done
