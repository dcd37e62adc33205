"""Item keys and the workspace-relative file names made from them.

A key is a stable, NFC-normalised relative path; an item split into several (one per face) has
children keyed ``<key>#0``, ``<key>#1``, ...
"""

from __future__ import annotations

import re
from pathlib import Path

_CHILD = re.compile(r"^(.*)#(\d+)$", re.S)


def split_key(key: str) -> tuple[str, str]:
    """(source item's key, face index or "") of a key; only a trailing ``#<digits>`` is a face index,
    so a ``#`` inside a file name stays part of the name."""
    m = _CHILD.match(key)
    return (m.group(1), m.group(2)) if m else (key, "")


def key_to_relpath(key: str, suffix: str) -> str:
    """Workspace-relative artifact path for a key: extension replaced, ``#n`` kept readable."""
    stem, face = split_key(key)
    p = Path(stem)
    name = p.stem + (f"_face{face}" if face else "") + suffix
    return str(p.with_name(name)) if p.name else name
