"""Shard part files and done markers: the on-disk state that makes a run resumable.

``manifests/ingest/items.parquet`` holds every item and its shard; ``manifests/<stage>/part-N.parquet``
holds one stage's outcomes for shard N, and ``part-N.done`` is written after it. A part without a
marker does not count. ``manifests/<stage>/dataset.parquet`` (+ ``.done``) holds a dataset step.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.schema import BLOB_COLUMN, ITEM_COLUMNS, KEPT, OUTCOME_COLUMNS, SCHEMA_VERSION, STATUSES, check_reason

_OUTCOME_SCHEMA = pa.schema([(c, pa.string()) for c in OUTCOME_COLUMNS] + [(BLOB_COLUMN, pa.binary())])
_ITEM_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ITEM_COLUMNS] + [("data", pa.binary()), ("shard", pa.int32())]
)


def atomic_write(path: Path, data: bytes) -> None:
    """Write *data* to *path* via a temporary file and a rename: readers never see half a file.

    No fsync: the guarantee is against killed processes, which is what resume handles; a power
    cut is left to the file system's journal.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _rows(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path, columns=columns).to_pylist()
    return rows


def _check(rows: list[dict[str, Any]]) -> None:
    """Every row's status and reason (ingest refusals, stage outcomes, worker crashes alike) are in
    the vocabulary of manifests.schema: nothing else reaches a manifest."""
    for r in rows:
        if r["status"] not in STATUSES:
            raise ValueError(f"unknown status {r['status']!r} for {r['key']!r}")
        if r["reason"] or r["status"] != KEPT:
            check_reason(r["reason"])


def dumps(metrics: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): stable bytes for the same values."""
    return json.dumps(metrics, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class Store:
    """Reads and writes ``WORK/manifests``."""

    def __init__(self, work: Path) -> None:
        self.root = work / "manifests"

    # -- items -----------------------------------------------------------------------------
    @property
    def items_path(self) -> Path:
        return self.root / "ingest" / "items.parquet"

    def write_items(self, rows: list[dict[str, Any]]) -> None:
        _check(rows)
        cols = {name: [r[name] for r in rows] for name in _ITEM_SCHEMA.names}
        atomic_write(self.items_path, _parquet_bytes(pa.table(cols, schema=_ITEM_SCHEMA)))

    def read_items(self) -> list[dict[str, Any]]:
        if not self.items_path.exists():
            return []
        return _rows(self.items_path)

    # -- per-shard parts ------------------------------------------------------------------
    def part(self, stage: str, shard: int) -> Path:
        return self.root / stage / f"part-{shard:05d}.parquet"

    def is_done(self, stage: str, shard: int) -> bool:
        return self.part(stage, shard).with_suffix(".done").exists()

    def done_shards(self, stage: str) -> set[int]:
        d = self.root / stage
        if not d.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in d.glob("part-*.done")}

    def write_part(self, stage: str, shard: int, rows: Iterable[dict[str, Any]]) -> None:
        """Write a shard's outcomes, then its marker: the marker exists only over a whole part."""
        self._write_rows(self.part(stage, shard), rows)

    def read_part(self, stage: str, shard: int) -> list[dict[str, Any]]:
        """A shard's outcome rows, without their blobs (see ``read_blobs``)."""
        return _rows(self.part(stage, shard), list(OUTCOME_COLUMNS))

    def read_stage(self, stage: str) -> Iterator[dict[str, Any]]:
        for shard in sorted(self.done_shards(stage)):
            yield from self.read_part(stage, shard)

    def read_blobs(self, stage: str) -> Iterator[tuple[str, bytes]]:
        """(key, blob) of every row of the stage's done shards that carries one, one shard in memory at a time."""
        for shard in sorted(self.done_shards(stage)):
            path = self.part(stage, shard)
            if BLOB_COLUMN not in pq.read_schema(path).names:  # a part written before blobs existed
                continue
            t = pq.read_table(path, columns=["key", BLOB_COLUMN])
            for key, blob in zip(t.column("key").to_pylist(), t.column(BLOB_COLUMN).to_pylist(), strict=True):
                if blob:
                    yield key, blob

    # -- dataset steps --------------------------------------------------------------------
    def dataset_part(self, stage: str) -> Path:
        return self.root / stage / "dataset.parquet"

    def dataset_done(self, stage: str) -> bool:
        return self.dataset_part(stage).with_suffix(".done").exists()

    def write_dataset(self, stage: str, rows: Iterable[dict[str, Any]]) -> None:
        self._write_rows(self.dataset_part(stage), rows)

    def read_dataset(self, stage: str) -> list[dict[str, Any]]:
        return _rows(self.dataset_part(stage), list(OUTCOME_COLUMNS)) if self.dataset_done(stage) else []

    def _write_rows(self, path: Path, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        _check(rows)
        cols = {c: [r[c] for r in rows] for c in OUTCOME_COLUMNS}
        cols[BLOB_COLUMN] = [r.get(BLOB_COLUMN, b"") for r in rows]
        atomic_write(path, _parquet_bytes(pa.table(cols, schema=_OUTCOME_SCHEMA)))
        atomic_write(path.with_suffix(".done"), b"")

    # -- invalidation ---------------------------------------------------------------------
    def clear(self, stage: str, *, dataset_only: bool = False) -> None:
        if dataset_only:
            self.dataset_part(stage).with_suffix(".done").unlink(missing_ok=True)
            self.dataset_part(stage).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.root / stage, ignore_errors=True)

    def stages_on_disk(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != "ingest")

    # -- fingerprints and failures --------------------------------------------------------
    def _json(self, name: str) -> dict[str, Any]:
        p = self.root / name
        return json.loads(p.read_text()) if p.exists() else {}

    def fingerprints(self) -> dict[str, Any]:
        fps = self._json("fingerprints.json")
        return fps if fps.get("schema") == SCHEMA_VERSION else {}

    def save_fingerprints(self, fps: dict[str, Any]) -> None:
        atomic_write(self.root / "fingerprints.json", json.dumps({**fps, "schema": SCHEMA_VERSION}, indent=1, sort_keys=True, ensure_ascii=False).encode())

    def failures(self) -> dict[str, Any]:
        return self._json("failed.json")

    def save_failures(self, failed: dict[str, Any]) -> None:
        atomic_write(self.root / "failed.json", json.dumps(failed, indent=1, sort_keys=True).encode())
