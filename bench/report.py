"""Report build time over a synthetic 100k-item workspace, after the per-item pass.

    python -m bench.report [--n 100000] [--workers 2] [--browser] [--keep DIR]

The workspace is written directly (no images decoded): ingest items, per-shard parts of compress
and crop, a dedup dataset step rejecting duplicates (a stand-in is registered when the real dedup
stage is not installed), split decisions, tiny JPEG files for every face crop, and the thumbnails
the per-item pass would have made for its rejections. Timed in the same run: reading the final rows
(``export.final_rows``, the baseline every consumer pays), ``export.write`` (manifests + dataset
tree), ``report.build`` cold (dataset-step thumbnails made) and warm. With ``--browser``: headless
Chromium load, filter and page times of the paged gallery against a static page holding every
tile as an ``<img>`` (the baseline).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("happy", "embarrassed", "angry", "anxious", "hurt", "sad", "neutral")
SHARD = 256
LOAD_LIMIT = 180  # seconds a page may take to fire 'load'


def _jpeg(seed: int, side: int) -> bytes:
    rng = np.random.default_rng(seed)
    a = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).resize((side, side), Image.BILINEAR).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def synth_workspace(work: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write a finished-looking workspace of *n* items; returns counts of what was made."""
    from manifests.store import Store, dumps
    from pipeline.thumbs import thumb_path
    from stages.base import STAGES
    from stages.images import atomic_write

    rng = random.Random(seed)
    store = Store(work)
    face, thumb = _jpeg(seed, 96), _jpeg(seed + 1, 120)
    names = ["compress", "crop", "dedup", "split"]
    (work / "run.toml").parent.mkdir(parents=True, exist_ok=True)
    (work / "run.toml").write_text(f"[run]\nstages = {json.dumps(names)}\n\n[split]\nlink = \"hardlink\"\n")
    items, parts, dedup_rows, split_rows = [], {"compress": {}, "crop": {}, "dedup": {}}, [], []
    made = {"items": n, "thumbs": 0, "faces": 0}
    keys = sorted(f"{LABELS[i % 7]}/{rng.randrange(n // 25):06x}_{i:07d}.jpg" for i in range(n))
    shard, kept_keys = 0, []
    for k in keys:
        label, person = k.split("/")[0], k.split("/")[1].split("_")[0]
        refused = rng.random() < 0.02
        items.append({"key": k, "source": k, "path": f"/raw/{k}", "member": "", "label": "" if refused else label,
                      "group": person, "meta": "{}", "status": "rejected" if refused else "kept",
                      "reason": "unlabeled" if refused else "", "detail": "no label record" if refused else "",
                      "data": b"", "shard": -1 if refused else shard})
        if refused:
            continue
        kept_keys.append(k)
        if len(kept_keys) % SHARD == 0:
            shard += 1
    for i, k in enumerate(kept_keys):
        sh, r = i // SHARD, rng.random()
        out = {"key": k, "status": "kept", "reason": "", "detail": "", "artifact": f"images/compressed/{k}",
               "metrics": dumps({"bytes_in": 2_400_000, "bytes_out": 310_000, "width": 1920, "height": 1080})}
        if r < 0.01:
            out |= {"status": "rejected", "reason": "decode_error", "detail": "truncated", "artifact": "", "metrics": "{}"}
        parts["compress"].setdefault(sh, []).append(out)
        if r < 0.01:
            continue
        c = {"key": k, "status": "kept", "reason": "", "detail": "", "artifact": f"images/faces/{k}",
             "metrics": dumps({"box_x": 800, "box_y": 300, "box_w": 260, "box_h": 260, "det_score": 0.99, "n_faces": 1})}
        if r < 0.27:
            reason = "no_face" if r < 0.22 else "multiple_faces" if r < 0.25 else "face_too_small"
            c |= {"status": "rejected", "reason": reason, "detail": f"{reason} on 640x360", "artifact": "",
                  "metrics": dumps({"n_faces": 0 if reason == "no_face" else 2, "det_score": round(r, 3)})}
            atomic_write(thumb_path(work, k), thumb)
            made["thumbs"] += 1
        else:
            atomic_write(work / c["artifact"], face)
            made["faces"] += 1
        parts["crop"].setdefault(sh, []).append(c)
        if r >= 0.27:
            if STAGES["dedup"].per_item:
                parts["dedup"].setdefault(sh, []).append({"key": k, "status": "kept", "reason": "", "detail": "",
                                                          "artifact": "", "metrics": dumps({"phash": f"{i:016x}"})})
            if r > 0.92:
                dedup_rows.append({"key": k, "status": "rejected", "reason": "duplicate", "artifact": "",
                                   "detail": f"duplicate of {kept_keys[i - 1]}",
                                   "metrics": dumps({"dup_of": kept_keys[i - 1], "distance": 4})})
            else:
                dedup_rows.append({"key": k, "status": "kept", "reason": "", "detail": "", "artifact": "", "metrics": "{}"})
                split_rows.append({"key": k, "status": "kept", "reason": "", "detail": "", "artifact": "",
                                   "metrics": dumps({"split": rng.choices(("train", "val", "test"), (8, 1, 1))[0]})})
    store.write_items(items)
    for name, by_shard in parts.items():
        for sh, rows in by_shard.items():
            store.write_part(name, sh, rows)
    store.write_dataset("dedup", dedup_rows)
    store.write_dataset("split", split_rows)
    return made


def _bigger(work: Path, n: int) -> Path:
    """The same page over the gallery rows repeated (keys made unique) up to *n*: 100k+ rejections."""
    src = work / "reports/rejected.js"
    data = json.loads(src.read_text(encoding="utf-8").split("=", 1)[1].rstrip().rstrip(";"))
    rows = data["rows"]
    data["rows"] = [[f"{r[0]}~{i // len(rows)}", *r[1:]] for i, r in zip(range(n), itertools.cycle(rows), strict=False)]
    (work / "reports/rejected_big.js").write_text("window.FACESIFT_REJECTED = " + json.dumps(data, ensure_ascii=False) + ";")
    page = work / "reports/index_big.html"
    page.write_text((work / "reports/index.html").read_text(encoding="utf-8").replace('src="rejected.js"', 'src="rejected_big.js"'),
                    encoding="utf-8")
    return page


def _browser(pages: list[tuple[str, Path]]) -> list[tuple[str, float, float, float]]:
    """(name, DOM ready s, load s, filter + next page s) per page; a fresh browser each, limits on all."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    out = []
    with sync_playwright() as p:
        for name, path in pages:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            pg = b.new_page()
            ready = load = step = float("inf")
            tiles = 0
            try:
                t0 = time.perf_counter()
                pg.goto(path.as_uri(), wait_until="domcontentloaded", timeout=LOAD_LIMIT * 1000)
                ready = time.perf_counter() - t0
                pg.wait_for_load_state("load", timeout=LOAD_LIMIT * 1000)  # every image fetched and decoded
                load = time.perf_counter() - t0
                tiles = pg.locator("#gallery > *").count()
                if name.startswith("facesift"):
                    t0 = time.perf_counter()
                    pg.select_option("#f-stage", "crop")
                    pg.select_option("#f-reason", "no_face")
                    pg.click("#g-next")
                    pg.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
                    step = time.perf_counter() - t0
            except Exception as e:  # playwright's TimeoutError or a crashed page: reported as inf
                print(f"  {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}", flush=True)
            out.append((f"{name} ({tiles or '?'} tiles in the DOM)", ready, load, step))
            b.close()
    return out


def _naive_page(src: Path, dst: Path) -> None:
    """The baseline: every rejected tile in the HTML at once."""
    data = json.loads(src.read_text(encoding="utf-8").split("=", 1)[1].rstrip().rstrip(";"))
    import html

    tiles = "".join(f'<figure title="{html.escape(r[5])}"><img src="thumbs/{html.escape(r[4])}" width=160></figure>' if r[4]
                    else f'<figure title="{html.escape(r[5])}">no preview</figure>' for r in data["rows"])
    dst.write_text(f"<!doctype html><html><body><div id=gallery>{tiles}</div></body></html>", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="items in the synthetic workspace")
    ap.add_argument("--workers", type=int, default=2, help="processes for the dataset-step thumbnails")
    ap.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    ap.add_argument("--browser-rows", type=int, default=150_000, help="also time the page with the rows repeated to this many")
    ap.add_argument("--keep", type=Path, help="build the workspace here and keep it (default: a temporary folder)")
    args = ap.parse_args(argv)
    import stages  # noqa: F401  (registers every stage)
    from manifests import export
    from manifests.store import Store
    from pipeline import report
    from stages.base import STAGES

    work = args.keep or Path(tempfile.mkdtemp(prefix="facesift-bench-report-"))
    try:
        t0 = time.perf_counter()
        made = synth_workspace(work, args.n)
        print(f"workspace {work}: {made['items']} items, {made['faces']} face files, {made['thumbs']} per-item thumbnails "
              f"({time.perf_counter() - t0:.1f}s to write)")
        names = ["compress", "crop", "dedup", "split"]
        rows: list[tuple[str, float]] = []
        t0 = time.perf_counter()
        n_rows = sum(1 for _ in export.final_rows([STAGES[n] for n in names], Store(work)))
        rows.append((f"final_rows: read {n_rows} rows (baseline)", time.perf_counter() - t0))
        t0 = time.perf_counter()
        export.write(work, [STAGES[n] for n in names], Store(work))
        rows.append(("export.write: manifests + dataset tree", time.perf_counter() - t0))
        for what in ("report.build, cold (makes dataset-step thumbnails)", "report.build, warm"):
            t0 = time.perf_counter()
            report.build(work, args.workers)
            rows.append((what, time.perf_counter() - t0))
        base = rows[0][1]
        print(f"{'step':<52} {'seconds':>8} {'x baseline':>10}")
        for what, sec in rows:
            print(f"{what:<52} {sec:>8.2f} {sec / base:>10.2f}")
        js, page = work / "reports/rejected.js", work / "reports/index.html"
        n_rej = len(json.loads(js.read_text(encoding="utf-8").split("=", 1)[1].rstrip().rstrip(";"))["rows"])
        print(f"rejected rows {n_rej}; rejected.js {js.stat().st_size / 1e6:.1f} MB; index.html {page.stat().st_size / 1e3:.0f} kB")
        if args.browser:
            naive = work / "reports/naive.html"
            _naive_page(js, naive)
            pages = [("facesift paged", page)]
            if args.browser_rows > n_rej:
                pages.append((f"facesift paged, rows repeated to {args.browser_rows}", _bigger(work, args.browser_rows)))
            pages.append(("static <img> per tile (baseline)", naive))
            print(f"{'page (headless Chromium)':<66} {'DOM ready s':>11} {'load s':>8} {'filter+page s':>14}")
            for what, ready, load, step in _browser(pages):
                shown = "-" if what.startswith("static") else f"{step:.3f}"
                print(f"{what:<66} {ready:>11.2f} {load:>8.2f} {shown:>14}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
