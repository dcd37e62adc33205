"""Stage order, shards, fingerprints, resume and retries.

A run: ingest (list the input, cut shards) -> the per-item pass (one task per shard, every
per-item stage fused) -> the dataset steps in stage order -> export. Everything already done
with the same fingerprint is skipped; a changed stage is recomputed with all stages after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests import export
from manifests.schema import KEPT, REJECTED
from manifests.store import Store, dumps
from pipeline import executor, report, sources
from pipeline.config import RunConfig, to_toml
from pipeline.profile import Profile
from pipeline.shard import ShardResult, ShardTask, run_shard
from stages.base import ORDER, STAGES, Item, Outcome, Stage, ordered, param_dict
from stages.images import atomic_write

log = logging.getLogger(__name__)
INGEST_VERSION = 1


@dataclass
class RunResult:
    ok: bool
    failed_shards: dict[str, list[int]] = field(default_factory=dict)
    summary: str = ""


def stage_classes(names: Iterable[str]) -> list[type[Stage[Any]]]:
    """The registered classes of the named stages, in the given order (what the export is told of them)."""
    return [STAGES[n] for n in names]


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprints(cfg: RunConfig, ingest_fp: str) -> dict[str, dict[str, Any]]:
    """Per stage: ``item`` (per-item work) and ``dataset`` (decisions) fingerprints with params.

    Per-item fingerprints chain through the per-item stages before them; a dataset step's
    fingerprint covers every per-item stage of the run and the dataset steps before it.
    """
    out: dict[str, dict[str, Any]] = {}
    item_up = ingest_fp
    for name in cfg.stages:
        cls, p = STAGES[name], cfg.params[name]
        if cls.per_item:
            item_up = _hash(name, cls.version, param_dict(p, decide=False), item_up)
            out[name] = {"item": item_up, "params": param_dict(p)}
    data_up = item_up
    for name in cfg.stages:
        cls, p = STAGES[name], cfg.params[name]
        entry = out.setdefault(name, {"params": param_dict(p)})
        if cls.per_dataset:
            data_up = _hash(name, cls.version, param_dict(p), data_up)
            entry["dataset"] = data_up
    return out


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    a, b = old.get("params", {}), new.get("params", {})
    diffs = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diffs) if diffs else "upstream stage or code version changed"


def invalidate(store: Store, cfg: RunConfig, ingest_fp: str) -> dict[str, Any]:
    """Drop stored results whose fingerprint no longer matches; say what and why."""
    old = store.fingerprints()
    new = fingerprints(cfg, ingest_fp)
    if old.get("ingest") and old["ingest"] != ingest_fp:
        log.warning("input or source settings changed since the last run: recomputing every stage")
        for name in store.stages_on_disk():
            store.clear(name)
        old = {}
    for name in cfg.stages:
        was, now = old.get("stages", {}).get(name, {}), new[name]
        if "item" in now and was.get("item") not in (None, now["item"]):
            log.warning("%s: %s; recomputing it and the stages after it", name, _changes(was, now))
            store.clear(name)
        elif "dataset" in now and was.get("dataset") not in (None, now["dataset"]):
            log.info("%s: %s; re-deciding from stored results", name, _changes(was, now))
            store.clear(name, dataset_only=True)
    # Stages not in this run keep their results but no longer count as the same fingerprint chain.
    stages_fp = {**old.get("stages", {}), **new}
    fps = {"ingest": ingest_fp, "stages": stages_fp}
    store.save_fingerprints(fps)
    return fps


def ingest(cfg: RunConfig, store: Store) -> tuple[list[Item], list[list[Item]], sources.Ingested, str]:
    """List the input; returns (items, shards, ingest result, ingest fingerprint)."""
    t0 = time.monotonic()
    got = sources.ingest(cfg.input, cfg.source)
    for note in got.notes:
        log.info("%s", note)
    if warning := sources.nothing_kept(got):
        log.warning("%s", warning)
    fp, shards = _shards(cfg, got)
    rows = []
    for n, shard in enumerate(shards):
        rows += [_item_row(it, n, KEPT, "", "") for it in shard]
    rows += [_item_row(it, -1, REJECTED, reason, detail) for it, reason, detail in got.rejected]
    rows.sort(key=lambda r: r["key"])
    old = store.fingerprints().get("ingest")
    if old != fp or not store.items_path.exists():
        store.write_items(rows)
    log.info("ingest: %d items in %d shards, %d refused (%.1fs)", len(got.items), len(shards), len(got.rejected), time.monotonic() - t0)
    return got.items, shards, got, fp


def shard_size(n_items: int, asked: int = 0) -> int:
    """Items per shard: as asked, else about 1% of the items, between 8 and 256. It depends on the
    input alone (never on --workers), so changing the worker count never re-cuts the shards; small
    inputs still get enough shards to keep every worker busy to the end."""
    return asked or min(256, max(8, -(-n_items // 100)))


def _shards(cfg: RunConfig, got: sources.Ingested) -> tuple[str, list[list[Item]]]:
    """(ingest fingerprint, shards): keys sorted, a fixed count per shard."""
    size = shard_size(len(got.items), cfg.shard_size)
    fp = _hash(INGEST_VERSION, got.signature, str(cfg.source), size, cfg.max_pixels)
    return fp, [got.items[i : i + size] for i in range(0, len(got.items), size)]


def _item_row(it: Item, shard: int, status: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": it.key, "source": it.source, "path": it.path, "member": it.member, "label": it.label,
            "group": it.group, "meta": dumps(dict(it.meta)), "status": status, "reason": reason, "detail": detail,
            "data": it.data, "shard": shard}


def outcome_row(o: Outcome) -> dict[str, Any]:
    return {"key": o.key, "status": o.status, "reason": o.reason, "detail": o.detail, "artifact": o.artifact, "metrics": dumps(dict(o.metrics)),
            "blob": o.blob}


def outcome_of_row(r: dict[str, Any]) -> Outcome:
    return Outcome(r["key"], r["status"], r["reason"], r["detail"], r["artifact"], json.loads(r["metrics"]))


def per_item_pass(cfg: RunConfig, store: Store, shards: list[list[Item]], profile: Profile | None = None) -> dict[str, list[int]]:
    """Run every pending shard through the per-item stages; returns failed shards by stage.
    *profile* sums where the workers' time went."""
    stages = [s for s in (STAGES[n](cfg.params[n]) for n in cfg.stages) if s.per_item]
    if not stages:
        return {}
    tasks = []
    for n, items in enumerate(shards):
        done = {s.name for s in stages if store.is_done(s.name, n)}
        if len(done) == len(stages):
            continue
        stored = {name: {r["key"]: outcome_of_row(r) for r in store.read_part(name, n)} for name in done}
        tasks.append(ShardTask(n, items, stages, stored, cfg.out.resolve(), cfg.max_pixels, pin=cfg.executor != "sequential"))
    if not tasks:
        log.info("per-item stages (%s): %s", ",".join(s.name for s in stages),
                 "every shard already done" if shards else "no items to process")
        return {}
    if any(store.done_shards(s.name) for s in stages):
        sweep_temporaries(cfg.out / "images")  # a resumed run: drop half-written files of the killed one
    log.info("per-item stages (%s): %d of %d shards to do, %s with %d worker(s)",
             ",".join(s.name for s in stages), len(tasks), len(shards), cfg.executor, cfg.workers)

    sizes = {t.shard: len(t.items) for t in tasks}

    def save(res: ShardResult) -> None:
        if profile is not None:
            profile.add(res.seconds, sizes[res.shard])
        for name, outs in res.outcomes.items():
            store.write_part(name, res.shard, (outcome_row(o) for o in sorted(outs, key=lambda o: o.key)))

    pending = tasks
    for attempt in range(cfg.retries + 1):
        try:
            for res in executor.run_tasks(run_shard, pending, backend=cfg.executor, workers=cfg.workers,
                                          scheduler=cfg.scheduler, sizes=[len(t.items) for t in pending],
                                          desc="images" if attempt == 0 else f"retry {attempt}"):
                save(res)
            pending = []
            break
        except Exception as e:  # a dead worker or a bug outside the per-image guard
            pending = [t for t in pending if not all(store.is_done(s.name, t.shard) for s in stages)]
            log.warning("a worker failed (%s: %s); %d shard(s) left", type(e).__name__, str(e)[:200], len(pending))
    failed: dict[str, list[int]] = {}
    for t in pending:  # still failing after the retries: run alone so one bad shard cannot sink others
        try:
            for res in executor.run_tasks(run_shard, [t], backend="loky" if cfg.executor == "loky" else cfg.executor,
                                          workers=1, scheduler=cfg.scheduler, sizes=[len(t.items)], desc=f"shard {t.shard}"):
                save(res)
        except Exception as e:
            log.error("shard %d failed for good: %s: %s", t.shard, type(e).__name__, str(e)[:200])
            for s in stages:
                if s.name not in t.done:
                    failed.setdefault(s.name, []).append(t.shard)
    return failed


def sweep_temporaries(folder: Path) -> None:
    """Remove ``.name.pid.tmp`` files that a killed run left (see stages.images.atomic_write)."""
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.name.startswith(".") and e.name.endswith(".tmp"):
                Path(e.path).unlink(missing_ok=True)


def dataset_pass(cfg: RunConfig, store: Store) -> None:
    """Run the dataset steps in stage order over what every earlier stage kept."""
    for name in cfg.stages:
        stage: Stage = STAGES[name](cfg.params[name])
        if not stage.per_dataset:
            continue
        if store.dataset_done(name):
            gone = stage.missing_outputs(cfg.out)
            if not gone:
                continue
            log.warning("%s: %s no longer in the workspace; running it again", name, gone)
            store.clear(name, dataset_only=True)
        records = [r for r in export.final_rows(stage_classes(cfg.stages), store, upto=name) if r["status"] == KEPT]
        t0 = time.monotonic()
        outs = sorted(stage.run(records, cfg.out), key=lambda o: o.key)
        store.write_dataset(name, (outcome_row(o) for o in outs))
        log.info("%s: decided %d items (%.1fs)", name, len(outs), time.monotonic() - t0)


#: Stages that only decide over what earlier stages kept: asked alone, they build on the stages the
#: workspace already ran before them instead of starting from the raw input.
BUILDS_ON_WORKSPACE = ("split", "train")


def with_workspace_stages(cfg: RunConfig, store: Store, ingest_fp: str) -> RunConfig:
    """*cfg* with the stages of the workspace's last run that come before its first stage prepended
    (their settings from WORK/run.toml), when it starts with a dataset-only stage (split, train).

    ``--stages train`` after ``--stages compress,crop,ocr,split`` trains on the face crops ocr kept,
    with the stored split, and leaves manifest.csv and dataset/ as they were; without this it would
    train on every raw input image and rewrite the manifest with them. Where the input changed
    since that run, the earlier stages run again on it first (their fingerprints no longer match).
    """
    first = cfg.stages[0] if cfg.stages else ""
    toml = cfg.out / "run.toml"
    if first not in BUILDS_ON_WORKSPACE or not toml.is_file():
        return cfg
    from pipeline.config import ConfigError, load_toml, stage_params

    try:
        last = load_toml(toml)
        earlier = [s for s in last.get("run", {}).get("stages", []) if s in ORDER and ORDER.index(s) < ORDER.index(first)]
        params = {**cfg.params, **{s: stage_params(s, last.get(s, {})) for s in earlier}}
    except (ConfigError, OSError) as e:
        log.warning("%s: the workspace's last configuration (%s) is unreadable (%s); running from the input", first, toml, e)
        return cfg
    if not earlier:
        return cfg
    log.info("%s: building on this workspace's earlier stages %s (settings from %s)", first, ",".join(earlier), toml)
    if store.fingerprints().get("ingest") not in (None, ingest_fp):
        # The input (or how facesift lists it) changed since: the earlier stages run again on it
        # rather than being dropped, so the result is still what they keep.
        log.warning("%s: the input changed since this workspace's last run; %s run again first", first, ",".join(earlier))
    return dataclasses.replace(cfg, stages=tuple(ordered([*earlier, *cfg.stages])), params=params)


def run(cfg: RunConfig, *, dry_run: bool = False) -> RunResult:
    t0 = time.monotonic()
    store = Store(cfg.out)
    _items, shards, got, ingest_fp = ingest(cfg, store) if not dry_run else _dry_ingest(cfg)
    cfg = with_workspace_stages(cfg, store, ingest_fp)
    if dry_run:
        return RunResult(True, summary=_dry_summary(cfg, store, shards, got, ingest_fp))
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write(cfg.out / "run.toml", to_toml(cfg).encode())
    invalidate(store, cfg, ingest_fp)
    profile = Profile() if cfg.profile else None
    failed = per_item_pass(cfg, store, shards, profile)
    store.save_failures({"shards": failed})
    if not failed:
        dataset_pass(cfg, store)
    split = cfg.params.get("split")
    stats = export.write(cfg.out, stage_classes(cfg.stages), store, got.missing, link=getattr(split, "link", "hardlink"),
                         read=lambda row: sources.read_item(sources.item_of_row(row)), ignored=got.ignored, splits=getattr(split, "names", ()))
    report.build(cfg.out, cfg.workers)
    summary = export.summary(stats, cfg.out, time.monotonic() - t0)
    if profile is not None:
        summary += "\n" + profile.write(cfg.out / "reports", [n for n in cfg.stages if STAGES[n].per_item])
    return RunResult(not failed, failed, summary)


def _dry_ingest(cfg: RunConfig) -> tuple[list[Item], list[list[Item]], sources.Ingested, str]:
    got = sources.ingest(cfg.input, cfg.source)
    fp, shards = _shards(cfg, got)
    return got.items, shards, got, fp


def _dry_summary(cfg: RunConfig, store: Store, shards: list[list[Item]], got: sources.Ingested, ingest_fp: str) -> str:
    old = store.fingerprints()
    fresh = old.get("ingest") != ingest_fp
    new = fingerprints(cfg, ingest_fp)
    lines = [f"dry run: layout {got.layout}; {len(got.items)} items in {len(shards)} shards; "
             f"{len(got.rejected)} refused at ingest", *[f"  {n}" for n in got.notes]]
    for name in cfg.stages:
        was = {} if fresh else old.get("stages", {}).get(name, {})
        same = was.get("item") == new[name].get("item") and was.get("dataset") == new[name].get("dataset")
        done = len(store.done_shards(name)) if same else 0
        what = "per-item" if "item" in new[name] else "dataset"
        lines.append(f"  {name:<9} {what:<8} {done}/{len(shards)} shards done" + ("" if same or not was else f"  (will recompute: {_changes(was, new[name])})"))
    lines.append(f"would run with {cfg.executor}, {cfg.workers} worker(s), into {cfg.out}")
    return "\n".join(lines)


def iter_items(store: Store) -> Iterable[Item]:
    return (sources.item_of_row(r) for r in store.read_items() if r["status"] == KEPT)
