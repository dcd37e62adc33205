"""One task: one shard of items through the run's consecutive per-item stages, one decode each.

Runs in a worker process. Writes only artifacts; outcomes go back to the driver, which writes
the part files. Stages already done for the shard are not re-run: their stored outcomes are
replayed (and ``restore`` rebuilds any image they handed on). The result carries where the task's
time went (pipeline.profile), which the driver sums when the run is profiled.

Reduced copies of an item come from its full-resolution pixels for a stage when that stage or one
before it in the run reads the full image anyway (compress, crop: ``reads_full``), else from a
DCT-scaled decode: a function of the run's stages, so a resumed run sees the same pixels.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests.schema import KEPT
from pipeline.executor import pin_threads
from pipeline.profile import CLOCK, own_time
from pipeline.sources import read_item
from pipeline.thumbs import make_thumbnail
from stages.base import Context, Item, Outcome, Stage
from stages.images import Decoded, DecodeError


@dataclass
class ShardTask:
    shard: int
    items: list[Item]
    stages: list[Stage]
    #: outcomes of the stages already done for this shard: stage -> key -> outcome
    done: Mapping[str, Mapping[str, Outcome]]
    work: Path
    max_pixels: int
    #: in a worker process (not the driver): pin native thread pools to one thread
    pin: bool = True


@dataclass
class ShardResult:
    shard: int
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    #: seconds by step (see pipeline.profile)
    seconds: dict[str, float] = field(default_factory=dict)


def children(stored: Mapping[str, Outcome], key: str) -> list[Outcome]:
    """The stored outcomes for *key*: its own, or those of the items it was split into."""
    if key in stored:
        return [stored[key]]
    out, i = [], 0
    while f"{key}#{i}" in stored:
        out.append(stored[f"{key}#{i}"])
        i += 1
    return out


#: Stages set up in this thread, one per stage class with the parameters it was set up for: every
#: task ships its stages without their models (Stage.__getstate__), and loading them again for each
#: shard (TensorFlow graphs traced, weights read) cost more than the shard's images on small runs.
#: Per thread, not per process: a scheduler's worker may run tasks in threads, and models such as a
#: TFLite interpreter must not be shared between them.
_held = threading.local()


def ready(stage: Stage) -> Stage:
    """*stage*, or the set-up instance of its class and parameters this thread already holds."""
    stages: dict[type, Stage] = _held.__dict__.setdefault("stages", {})
    held = stages.get(type(stage))
    if held is not None and held.params == stage.params:
        return held
    stage.ensure_setup()
    stages[type(stage)] = stage  # the previous one's models go with it
    return stage


def run_shard(task: ShardTask) -> ShardResult:
    t0, clock0 = time.perf_counter(), CLOCK.copy()
    times: Counter[str] = Counter()
    if task.pin:
        pin_threads()
    task = dataclasses.replace(task, stages=[s if s.name in task.done else own_time(times, "setup", ready, s) for s in task.stages])
    result = ShardResult(task.shard, {s.name: [] for s in task.stages if s.name not in task.done})
    from_full = reduce_from_full(task.stages)
    for item in task.items:
        for name, outs in run_item(item, task, from_full, times).items():
            result.outcomes[name].extend(outs)
    times.update(CLOCK - clock0)
    times["other"] = max(0.0, time.perf_counter() - t0 - times.total())  # type: ignore[assignment]  # seconds: Counter's stubs say int
    result.seconds = dict(times)
    return result


def reduce_from_full(stages: list[Stage]) -> list[bool]:
    """Per stage: whether it or a stage before it reads the full-resolution image (a stage says so
    with a true ``reads_full`` attribute)."""
    out, seen = [], False
    for s in stages:
        seen = seen or bool(getattr(s, "reads_full", False))
        out.append(seen)
    return out


def run_item(item: Item, task: ShardTask, from_full: list[bool], times: Counter[str]) -> dict[str, list[Outcome]]:
    """All stages for one item (and whatever it splits into); returns new outcomes by stage.
    *from_full*: per stage, see ``reduce_from_full``; *times*: seconds by step, added to."""
    image = Decoded(lambda: read_item(item), task.max_pixels)
    live: list[tuple[Item, Any, dict[str, Outcome]]] = [(item, None, {})]
    new: dict[str, list[Outcome]] = {}
    for stage, full in zip(task.stages, from_full, strict=True):
        image.reduce_from_full = full
        nxt = []
        for it, view, upstream in live:
            ctx = Context(task.work, view, upstream)
            stored = task.done.get(stage.name)
            if stored is not None:
                outs = children(stored, it.key)
                outs = [dataclasses.replace(o, view=own_time(times, f"{stage.name} restore", stage.restore, it, o, ctx))
                        if o.status == KEPT else o for o in outs]
            else:
                outs = own_time(times, stage.name, _process, stage, it, image, ctx)
                new.setdefault(stage.name, []).extend(dataclasses.replace(o, view=None) for o in outs)
                for o in outs:  # the report's thumbnails, made here in parallel; never changes an outcome
                    if o.status != KEPT and o.reason != "too_large":
                        own_time(times, "thumbnails", make_thumbnail, image, o.key, task.work)
            for o in outs:
                if o.status == KEPT:
                    child = it if o.key == it.key else dataclasses.replace(it, key=o.key)
                    nxt.append((child, o.view if o.view is not None else view, {**upstream, stage.name: o}))
        live = nxt
    return new


def _process(stage: Stage, item: Item, image: Decoded, ctx: Context) -> list[Outcome]:
    try:
        res = stage.process(item, image, ctx)
    except DecodeError as e:
        return [Outcome.rejected(item.key, e.reason, e.detail)]
    except MemoryError:
        return [Outcome.rejected(item.key, "too_large", "out of memory decoding or processing this image")]
    except Exception as e:  # one image's bug must not cost the shard: it becomes a row
        return [Outcome.failed(item.key, "stage_error", f"{type(e).__name__}: {e}")]
    return res if isinstance(res, list) else [res]
