"""report: WORK/reports/index.html, a self-contained folder (no network) built from the final rows.

    python -m pipeline report WORK      (also written at the end of every run)

The page holds the counts per stage and reason, the class x split table and chart, what compress
saved, the model's plots when one was trained, and a paged, filterable gallery of every image that
was not kept. Gallery rows live in reports/rejected.js (one array, rendered a page at a time).
Thumbnails of per-item rejections are made in the parallel per-item pass (``pipeline.thumbs.make_thumbnail``,
called from pipeline/shard.py); those of dataset-step rejections (duplicates, quality decisions),
unknown until then, of ingest refusals whose image decodes (unlabeled, annotator_disagreement) and
of the kept images duplicates are shown beside, are made here in parallel; what cannot be decoded
shows a placeholder. Each tile draws its evidence: ocr's text boxes and crop's face box (in pixels
of the source image, whose size the thumbnail's JPEG comment records), a duplicate's kept partner.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from manifests.export import Stats, final_rows
from manifests.keys import key_to_relpath, split_key
from manifests.schema import KEPT, REASONS
from manifests.store import Store
from pipeline import report_assets
from pipeline.options import verbosity
from pipeline.sources import item_of_row
from pipeline.thumbs import backfill, thumb_source_size
from stages.base import ORDER, STAGES, ConfigError, Item
from stages.images import atomic_write
from stages.split import empty_splits

log = logging.getLogger(__name__)

SPLIT_COLORS = {"train": "#4e79a7", "val": "#f28e2b", "test": "#59a14f", "": "#9aa5b1"}
# Metrics too bulky or too generic to help explain a rejection on hover.
_HOVER_SKIP = {"bytes_in", "bytes_out", "width", "height", "landmarks", "split"}
#: Ingest refusals whose image decodes: shown, not a placeholder (the others cannot be read or are unsafe to).
_SHOWN_AT_INGEST = {"unlabeled", "annotator_disagreement"}
_DUP_OF = re.compile(r"^(?:exact copy|near duplicate) of (.+?)(?: \(distance [^)]*\))?$")


def _source_item(work: Path, r: dict[str, Any], items: dict[str, dict[str, Any]]) -> Item | None:
    """What to thumbnail for a row: its current file (crop, compressed copy, source) or the raw item."""
    f = r["file"]
    if f and "::" not in f:
        p = Path(f) if Path(f).is_absolute() else work / f
        if p.is_file():
            return Item(r["key"], r["source"], str(p))
    row = items.get(split_key(r["key"])[0])
    return item_of_row(row) if row else None


# -- evidence drawn on the thumbnails ------------------------------------------------------------
def _partner(r: dict[str, Any], extra: dict[str, Any]) -> str:
    """The kept image a duplicate duplicates (``dup_of``, else named in the detail), or ""."""
    if r["stage"] != "dedup" or r["reason"] != "duplicate":
        return ""
    of = extra.get("dup_of") or r["metrics"].get("dup_of")
    if of:
        return str(of)
    m = _DUP_OF.match(str(r["detail"] or ""))
    return m.group(1) if m else ""


def _evidence(r: dict[str, Any], extra: dict[str, Any], thumb: str, partner: str, mate_thumb: str) -> dict[str, Any] | int:
    """What the tile draws: boxes in source pixels (``size`` of that image), the duplicate's partner, the detail."""
    m = {**r["metrics"], **extra}
    ev: dict[str, Any] = {}
    boxes: list[list[Any]] = []
    face = [m.get(k) for k in ("box_x", "box_y", "box_w", "box_h")]
    has_face = all(isinstance(v, (int, float)) for v in face)
    if r["stage"] == "crop" and has_face:
        boxes.append([*face, "face"])
    elif r["stage"] == "ocr":
        if m.get("text_where", "image") == "image":
            boxes += [[*b, "text"] for b in m.get("text_boxes") or [] if isinstance(b, list) and len(b) == 4]
        elif has_face:  # text found in the face crop: show where the crop was
            boxes.append([*face, "face"])
    if boxes and thumb and (size := thumb_source_size(thumb)):
        ev["size"], ev["boxes"] = list(size), boxes
    if partner:
        ev["dup"] = [partner, mate_thumb]
        for k in ("dup_kind", "dup_hamming", "dup_inliers", "dup_overlap"):
            if m.get(k) not in (None, ""):
                ev.setdefault("dupm", []).append(f"{k[4:]} {round(m[k], 3) if isinstance(m[k], float) else m[k]}")
    if r["detail"]:
        ev["d"] = str(r["detail"])[:200]
    return ev or 0


# -- data ----------------------------------------------------------------------------------------
def _stages(work: Path) -> list[str]:
    try:
        cfg = tomllib.loads((work / "run.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{work} is not a facesift workspace (no run.toml); run `python -m pipeline run` first") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{work / 'run.toml'}: {e}") from None
    names = [s for s in cfg.get("run", {}).get("stages", []) if s in ORDER]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"stage(s) {', '.join(unknown)} of {work / 'run.toml'} are not installed")
    return names


def _hover(r: dict[str, Any], extra: dict[str, Any]) -> str:
    """The tooltip: key, stage and reason, detail, and the scores and findings in the metrics."""
    lines = [r["key"], f"{r['stage']}: {r['reason']} ({r['status']}) - {REASONS.get(r['reason'], '')}"]
    if r["detail"]:
        lines.append(str(r["detail"])[:300])

    metrics = {**r["metrics"], **extra}
    own = STAGES[r["stage"]].columns if r["stage"] in STAGES else ()
    # The rejecting stage's own columns first, then findings and scores, then the rest.
    first = sorted(metrics, key=lambda k: (k not in own, not any(w in k for w in ("text", "dup", "score", "of")), k))
    shown = []
    for k in first:
        v = metrics[k]
        if k in _HOVER_SKIP or v is None or v == "" or isinstance(v, dict):
            continue
        if isinstance(v, float):
            v = round(v, 4)
        if isinstance(v, list) and len(v) > 8:
            continue
        text = json.dumps(v, ensure_ascii=False) if isinstance(v, list) else str(v)
        if len(text) > 120 or (len(text) >= 16 and all(c in "0123456789abcdef" for c in text)):
            continue  # hashes and long blobs explain nothing to a reader
        shown.append(f"{k}: {text}")
    return "\n".join(lines + shown[:12])


def collect(work: Path, workers: int = 1) -> dict[str, Any]:
    """Everything the page shows, from the workspace (and missing thumbnails made)."""
    names = _stages(work)
    store = Store(work)
    if not store.items_path.exists():
        raise ConfigError(f"{work} has no manifests/ingest/items.parquet; run `python -m pipeline run` first")
    stats = Stats()
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for r in final_rows([STAGES[n] for n in names], store, stats=stats):
        (kept if r["status"] == KEPT else dropped).append(r)
    # no_face first: when the detector does not fit a user's photos, the first page says so at once.
    dropped.sort(key=lambda r: (r["reason"] != "no_face", r["key"]))
    # Rejections decided by a dataset step (dedup's groups, quality's thresholds), with that step's metrics.
    stages_dropping = {r["stage"] for r in dropped}
    decided = {n: {d["key"]: json.loads(d["metrics"]) for d in store.read_dataset(n) if d["status"] != KEPT}
               for n in names if n in stages_dropping and STAGES[n].per_dataset}
    items: dict[str, dict[str, Any]] = {}
    kept_by_key = {r["key"]: r for r in kept}
    jobs: list[tuple[str, Item]] = []
    queued: set[str] = set()
    troot = str(work / "reports" / "thumbs")

    def thumb_of(r: dict[str, Any]) -> str:
        """The row's thumbnail path below thumbs/ (queued to be made when it is missing and can be)."""
        thumb = key_to_relpath(r["key"], ".jpg")
        if os.path.isfile(os.path.join(troot, thumb)):
            return thumb
        # Decided after the per-item pass (dedup, quality), refused at ingest though it decodes, or a
        # kept image a duplicate is shown beside: no thumbnail yet.
        if r["status"] == KEPT or r["key"] in decided.get(r["stage"], ()) or (r["stage"] == "ingest" and r["reason"] in _SHOWN_AT_INGEST):
            if not items:
                items.update((i["key"], i) for i in store.read_items())
            src = _source_item(work, r, items)
            if src is not None and r["key"] not in queued:
                queued.add(r["key"])
                jobs.append((r["key"], src))
        return ""

    gallery = []
    for r in dropped:
        extra = decided.get(r["stage"], {}).get(r["key"], {})
        partner = _partner(r, extra)
        mate = kept_by_key.get(partner) if partner else None
        gallery.append((r, extra, thumb_of(r), partner, thumb_of(mate) if mate else ""))
    made = backfill(work, jobs, workers)
    if jobs:
        log.info("report: %d of %d thumbnail(s) made (dataset-step rejections, ingest refusals, kept duplicates' partners)",
                 made, len(jobs))
    wanted = {k for k, _ in jobs}

    def made_now(key: str, thumb: str) -> str:
        rel = key_to_relpath(key, ".jpg")
        return thumb or (rel if key in wanted and os.path.isfile(os.path.join(troot, rel)) else "")

    rows = []
    for r, extra, thumb, partner, mate_thumb in gallery:
        thumb = made_now(r["key"], thumb)
        if partner and not mate_thumb:
            mate_thumb = made_now(partner, "")
        ev = _evidence(r, extra, os.path.join(troot, thumb) if thumb else "", partner, mate_thumb)
        rows.append((r["key"], r["stage"], r["reason"], r["status"], thumb, _hover(r, extra), ev))
    cells = Counter((r["label"], r["metrics"].get("split", "")) for r in kept)
    saved = (sum(int(r["metrics"].get("bytes_in") or 0) for r in kept), sum(int(r["metrics"].get("bytes_out") or 0) for r in kept))
    return {"stages": names, "stats": stats, "cells": cells, "saved": saved, "rows": rows}


# -- page ----------------------------------------------------------------------------------------
def build(work: Path, workers: int | None = None) -> Path:
    """Write WORK/reports/index.html and rejected.js; returns the page's path."""
    work = Path(work)
    data = collect(work, workers or os.cpu_count() or 1)
    out = work / "reports"
    order = ["ingest", *data["stages"]]
    stages = sorted({r[1] for r in data["rows"]}, key=lambda s: order.index(s) if s in order else len(order))
    reasons = sorted({r[2] for r in data["rows"]})
    statuses = sorted({r[3] for r in data["rows"]})
    js = {"stages": stages, "reasons": reasons, "statuses": statuses,
          "rows": [[k, stages.index(s), reasons.index(rs), statuses.index(st), t, h, ev] for k, s, rs, st, t, h, ev in data["rows"]]}
    atomic_write(out / "rejected.js", ("window.FACESIFT_REJECTED = " + json.dumps(js, ensure_ascii=False, separators=(",", ":"))
                                       + ";\n").encode("utf-8"))
    model = _model_section(work, out)
    body = "\n".join([_summary(data), _stage_table(data), _split_section(data), model, _gallery(len(data["rows"]))])
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<title>facesift report: {html.escape(work.name)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
            f"<style>{report_assets.CSS}</style>\n</head><body>\n"
            f"<header><h1>facesift report</h1><p>{html.escape(str(work.resolve()))} &middot; stages: "
            f"{html.escape(', '.join(data['stages']))}</p></header>\n<main>\n{body}\n</main>\n"
            f'<script src="rejected.js"></script>\n<script>{report_assets.JS}</script>\n</body></html>\n')
    atomic_write(out / "index.html", page.encode("utf-8"))
    log.debug("report: %s (%d not kept)", out / "index.html", len(data["rows"]))  # the caller says where it is
    return out / "index.html"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _summary(data: dict[str, Any]) -> str:
    st = data["stats"]
    cards = [(f"{st.items:,}", "items in the input"), (f"{st.final_kept:,}", "kept (manifest.csv)"),
             (f"{len(data['rows']):,}", "not kept (rejected.csv)")]
    if st.bytes_in:  # the run summary's figure: every image compress kept, whatever later stages did with it
        k_in, k_out = data["saved"]
        cards.append((f"{_mb(st.bytes_in - st.bytes_out)}",
                      f"saved by compress over the {st.kept['compress']:,} image(s) it kept: {_mb(st.bytes_in)} &rarr; {_mb(st.bytes_out)} "
                      f"({st.bytes_in / max(st.bytes_out, 1):.1f}x smaller); over the {st.final_kept:,} kept in manifest.csv: "
                      f"{_mb(k_in)} &rarr; {_mb(k_out)}"))
    html_cards = "".join(f"<div class=card><b>{v}</b><span>{t}</span></div>" for v, t in cards)
    return (f"<section><h2>Summary</h2><div class=cards>{html_cards}</div>"
            f'<p class=muted>Files: <a href="rejected.csv">rejected.csv</a> (every item not kept, with stage, reason and '
            f'detail) &middot; <a href="../manifest.csv">../manifest.csv</a> &middot; <a href="../dataset/">../dataset/</a></p></section>')


def _stage_table(data: dict[str, Any]) -> str:
    st = data["stats"]
    rows = []

    def link(stage: str, key: str, n: int) -> str:
        status, _, reason = key.rpartition(":")
        mark = " (failed)" if status == "failed" else ""
        return (f'<a href="#stage={html.escape(stage)}&amp;reason={html.escape(reason)}" data-stage="{html.escape(stage)}" '
                f'data-reason="{html.escape(reason)}">{html.escape(reason)}{mark} {n:,}</a>')

    if st.ingest_rejected:
        refused = sum(st.ingest_rejected.values())
        rows.append(("ingest", st.items - refused, refused, st.ingest_rejected, "ingest"))
    for name in data["stages"]:
        d = st.dropped.get(name, Counter())
        rows.append((name, st.kept.get(name, 0), sum(d.values()), d, name))
    body = "".join(f"<tr><td>{html.escape(n)}</td><td>{k:,}</td><td>{x:,}</td><td class='l reasons'>"
                   + " ".join(link(s, key, c) for key, c in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))) + "</td></tr>"
                   for n, k, x, reasons, s in rows)
    return ("<section><h2>Counts per stage and reason</h2><table><tr><th>stage</th><th>kept</th><th>not kept</th>"
            f"<th>by reason (click to see them)</th></tr>{body}</table></section>")


def _split_section(data: dict[str, Any]) -> str:
    cells: Counter[tuple[str, str]] = data["cells"]
    if not cells:
        return "<section><h2>Classes and splits</h2><p class=muted>No item was kept.</p></section>"
    labels = sorted({lab for lab, _ in cells})
    splits = sorted({s for _, s in cells}, key=lambda s: list(SPLIT_COLORS).index(s) if s in SPLIT_COLORS else 9)
    head = "".join(f"<th>{html.escape(s or 'no split')}</th>" for s in splits)
    body = []
    for lab in [*labels, None]:
        counts = [sum(cells[la, s] for la in labels) if lab is None else cells[lab, s] for s in splits]
        total = sum(counts)
        tds = "".join(f"<td>{c:,} <span class=muted>{100 * c / max(total, 1):.1f}%</span></td>" for c in counts)
        name = "<b>all</b>" if lab is None else html.escape(lab or "(no label)")
        body.append(f"<tr><td>{name}</td>{tds}<td><b>{total:,}</b></td></tr>")
    table = f"<table><tr><th>class</th>{head}<th>total</th></tr>{''.join(body)}</table>"
    totals = Counter({lab: sum(cells[lab, s] for s in splits) for lab in labels if lab})
    gaps = empty_splits(cells, totals, [s for s in splits if s])
    warn = "".join(f"<p class=warn>&#9888; class {html.escape(lab)} has no {' or '.join(miss)} image: "
                   f"no score on {' or '.join(miss)} says anything about it</p>" for lab, miss in gaps.items())
    return f"<section><h2>Classes and splits</h2>{warn}<div class=row>{table}{_chart(cells, labels, splits)}</div></section>"


def _chart(cells: Counter[tuple[str, str]], labels: Sequence[str], splits: Sequence[str]) -> str:
    """Stacked horizontal bars, one per class, in inline SVG."""
    bar, gap, left, width = 18, 8, 110, 380
    top = 28
    most = max(sum(cells[lab, s] for s in splits) for lab in labels) or 1
    h = top + len(labels) * (bar + gap) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{h}" role="img" '
             f'aria-label="images per class and split" font-size="12">']
    x = left
    for s in splits:  # legend
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{SPLIT_COLORS.get(s, "#9aa5b1")}"/>'
                     f'<text x="{x + 16}" y="16">{html.escape(s or "no split")}</text>')
        x += 70
    for i, lab in enumerate(labels):
        y = top + i * (bar + gap)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{html.escape(lab or "(no label)")}</text>')
        x0 = float(left)
        for s in splits:
            n = cells[lab, s]
            w = width * n / most
            if n:
                parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar}" '
                             f'fill="{SPLIT_COLORS.get(s, "#9aa5b1")}"><title>{html.escape(lab)} / {html.escape(s)}: {n:,}</title></rect>')
            x0 += w
        parts.append(f'<text x="{x0 + 4:.1f}" y="{y + 13}">{sum(cells[lab, s] for s in splits):,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _model_section(work: Path, out: Path) -> str:
    """The trained model's plots and metrics, copied into reports/model/ so the folder stands alone."""
    src = work / "model"
    if not (src / "metrics.json").is_file():
        return ""
    dst = out / "model"
    dst.mkdir(parents=True, exist_ok=True)
    figs = []
    for name in ("metrics.json", "curves.png", "confusion.png"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            if name.endswith(".png"):
                figs.append(f'<a href="model/{name}"><img src="model/{name}" alt="{name}"></a>')
    try:
        metrics = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    scalars = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{round(v, 4) if isinstance(v, float) else html.escape(str(v))}</td></tr>"
                      for k, v in (metrics.items() if isinstance(metrics, dict) else [])
                      if isinstance(v, (int, float, str)) and len(str(v)) < 80)
    return (f"<section class=model><h2>Model</h2><div class=row><table>{scalars}</table>{''.join(figs)}</div>"
            f'<p class=muted><a href="model/metrics.json">metrics.json</a> &middot; the model itself: '
            f'<a href="../model/">../model/</a></p></section>')


def _gallery(n: int) -> str:
    return f"""<section><h2>Not kept: {n:,} image(s)</h2>
<div class=controls>
  <label>stage <select id="f-stage"></select></label>
  <label>reason <select id="f-reason"></select></label>
  <label>key contains <input id="f-key" type="search" size="24"></label>
  <label>per page <select id="f-size"><option>50</option><option selected>100</option><option>200</option><option>500</option></select></label>
</div>
<div class=pager><button id="g-prev" type="button">&larr; prev</button>
  page <input id="g-page" type="number" min="1" value="1" style="width:5em"> <span id="g-pages"></span>
  <button id="g-next" type="button">next &rarr;</button> <span id="g-info" class=muted></span></div>
<div id="gallery"></div>
<p class=muted>Hover a tile for the detail: reason, text found, duplicate of, scores.</p>
</section>"""


# -- command line --------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="write WORK/reports/index.html: counts, class x split, rejected-image gallery",
                              description="Build the HTML report of a workspace (also written at the end of every run).")
    p.add_argument("work", type=Path, help="workspace folder given as --out to run")
    p.add_argument("--workers", "-j", type=int, default=None,
                   help="processes for the thumbnails of dataset-step rejections (default: all cores)")
    verbosity(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    page = build(args.work, args.workers)
    print(f"report: {page}")
    return 0
