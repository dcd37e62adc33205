"""Where a worker's time goes: seconds per step of the per-item pass, summed over shards.

Steps: ``read`` (the file's bytes), ``decode`` (full-resolution pixels), ``reduce`` (reduced
copies), ``encode`` and ``write`` (every JPEG/PNG a stage or a thumbnail saves), each stage's own
work (``<stage>``, its time less the image steps above that ran inside it), ``<stage> restore``
(rebuilding a view on resume), ``setup`` (models loaded) and ``other`` (the rest of the shard:
bookkeeping). stages.images adds the image steps to its ``CLOCK`` (a per-process counter); the shard
task takes the difference around its work, so the figures are per task whatever ran before.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stages.images import CLOCK, atomic_write

T = TypeVar("T")
ORDER = ("read", "decode", "reduce", "encode", "write")


def own_time(times: Counter[str], step: str, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)``; add its time less the image steps (``CLOCK``) that ran inside it to ``times[step]``."""
    t0, inner = time.perf_counter(), CLOCK.total()
    try:
        return fn(*args)
    finally:
        times[step] += (time.perf_counter() - t0) - (CLOCK.total() - inner)  # type: ignore[assignment]  # seconds


class Profile:
    """Step times of many shard tasks, summed; written as CSV with a one-line summary."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.images = 0

    def add(self, seconds: Mapping[str, float], images: int) -> None:
        self.seconds.update(seconds)
        self.images += images

    def rows(self, stages: list[str]) -> list[tuple[str, float]]:
        """(step, seconds): image steps, stages in run order, then the rest by name; empty steps left out."""
        first = [*ORDER, *stages, *(f"{s} restore" for s in stages)]
        rest = sorted(set(self.seconds) - set(first))
        return [(k, self.seconds[k]) for k in (*first, *rest) if self.seconds.get(k, 0) > 0]

    def write(self, folder: Path, stages: list[str]) -> str:
        """Write ``folder/profile.csv``; return the summary line."""
        rows = self.rows(stages)
        total = sum(s for _, s in rows)
        n = max(1, self.images)
        lines = ["step,seconds,share,ms_per_image"]
        lines += [f"{k},{s:.3f},{s / total if total else 0:.4f},{1000 * s / n:.2f}" for k, s in rows]
        path = folder / "profile.csv"
        atomic_write(path, ("\n".join(lines) + "\n").encode())
        top = sorted(rows, key=lambda r: -r[1])[:6]
        parts = ", ".join(f"{k} {100 * s / total:.0f}%" for k, s in top) if total else "nothing timed"
        return (f"profile: {total:.1f} s of worker time over {self.images} images ({1000 * total / n:.1f} ms/image): "
                f"{parts} -> {path}")
