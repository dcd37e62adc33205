"""Listing an input tree: plain files and zip members alike, with stable NFC keys.

Zip members are read in place (stages.images.read_bytes), never extracted. Names stored without the UTF-8 flag are decoded
as UTF-8 when valid, else CP949 (Korean Windows tools), else CP437.
"""

from __future__ import annotations

import os
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"})


@dataclass(frozen=True, slots=True)
class Entry:
    """A file in the input tree.

    ``key`` is the NFC relative path (for members: the zip's relative path without ``.zip``, then
    the member name); ``error`` is set for entries that cannot be used (unsafe or unreadable).
    """

    key: str
    path: str
    rel: str
    member: str = ""
    size: int = 0
    mtime: int = 0
    error: tuple[str, str] | None = None

    @property
    def source(self) -> str:
        return f"{self.rel}::{self.member}" if self.member else self.rel

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix.lower()


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def member_name(info: zipfile.ZipInfo) -> str:
    """The real name of a zip member, whatever encoding wrote it."""
    if info.flag_bits & 0x800:
        return info.filename
    raw = info.filename.encode("cp437")
    for enc in ("utf-8", "cp949"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            pass
    return info.filename


def _unsafe(name: str) -> bool:
    p = name.replace("\\", "/")
    return p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in p.split("/")


def walk(root: Path) -> Iterator[Entry]:
    """Every file below *root* (or *root* itself), zip files expanded, in sorted key order."""
    entries: list[Entry] = []
    root = root.resolve()
    if root.is_file():
        if root.suffix.lower() == ".zip":
            entries.extend(zip_entries(root, "", root.name))
        else:
            entries.append(_file_entry(root, nfc(root.name), root.name))
        return iter(sorted(entries, key=lambda e: e.key))
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            full = Path(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if name.lower().endswith(".zip"):
                entries.extend(zip_entries(full, nfc(rel[: -len(".zip")]), rel))
            else:
                entries.append(_file_entry(full, nfc(rel), rel))
    return iter(sorted(entries, key=lambda e: e.key))


def _file_entry(path: Path, key: str, rel: str) -> Entry:
    try:
        st = path.stat()
    except OSError as e:
        return Entry(key, str(path), rel, error=("unreadable", f"{type(e).__name__}: {e.strerror or e}"))
    return Entry(key, str(path), rel, size=st.st_size, mtime=st.st_mtime_ns)


def zip_entries(path: Path, prefix: str, rel: str) -> list[Entry]:
    """Members of one zip file as entries keyed ``prefix/member``."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as e:
        return [Entry(nfc(prefix or path.name), str(path), rel, error=("unreadable", f"bad zip file: {e}"))]
    mtime = path.stat().st_mtime_ns
    out = []
    for info in infos:
        if info.is_dir():
            continue
        name = nfc(member_name(info))
        key = f"{prefix}/{name.lstrip('/')}" if prefix else name.lstrip("/")
        if _unsafe(name):
            out.append(Entry(key, str(path), rel, info.filename, error=("unsafe_path", f"zip member {name!r} escapes the archive")))
        else:
            out.append(Entry(key, str(path), rel, info.filename, size=info.file_size, mtime=mtime))
    return out
