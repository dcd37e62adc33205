"""Near-duplicate development set: real photos and the copies the web makes of them.

    python -m bench.dupset --score [--skip-crop] [--out DIR] [--shared ../shared/data] [--per-part 40]

``--score`` runs the dedup stage's per-item pass on every image (without crop, then through the
crop stage's default detector) and its dataset step per part, and prints pair precision/recall,
recall by kind, same-person merges and candidates verified per image (BENCHMARKS.md).

Sources are real photos from ``../shared/data``: ``faces/dev`` (FDDB news photos and street
scenes, each with its largest labelled face), several photos each of Obama and Biden from
``faces/presence`` (different photos of the same person: they must stay apart), and the memegen
templates of ``text/images`` with their captioned renders (real recaptioned copies). Each photo
gets these copies (the kind names are those the dedup stage reports):

| edit | kind |
|---|---|
| byte copy | exact |
| half size + JPEG q75; JPEG q30; colour shift (hue, saturation, gamma) | resized |
| crop keeping 60%, 40% and 20% of the area at another aspect (the face inside when it fits); border/padding; caption drawn on | reframed |
| the face (with margin, elliptical mask) pasted onto a no-face photo | cutout |
| mirrored | mirror |

Sources are split into a tuning part and a held-out part by a hash of the source name (never by
copy), so every copy of a photo is in the part of its photo. ``items`` returns everything in
memory; ``--out`` also writes a folder tree (``<part>/<label>/<source>__<edit>.ext``) with a
``truth.csv`` for runs through the CLI.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from stages.dedup import DedupParams
from stages.dupgroups import find_groups

KINDS = ("exact", "resized", "reframed", "cutout", "mirror")
EDITS = {"copy": "exact", "half_q75": "resized", "q30": "resized", "colour": "resized", "crop60": "reframed", "crop40": "reframed",
         "crop20": "reframed", "border": "reframed", "caption": "reframed", "cutout": "cutout", "mirror": "mirror"}
# Different photos of one person (none is a crop of another), and the part each is in: both parts
# hold different photos of one person.
PEOPLE = {"fr_obama.jpg": ("obama", "tuning"), "fr_obama1.jpg": ("obama", "tuning"), "fr_obama3.jpg": ("obama", "heldout"),
          "fr_biden.jpg": ("biden", "heldout"), "fr_obama_and_biden.jpg": ("obama+biden", "heldout")}
WORDS = ("WHEN YOU", "FINALLY", "MONDAY AGAIN", "ME TOO", "NOBODY:", "SO TRUE", "WAIT WHAT", "LOL")


@dataclass(frozen=True)
class Copy:
    name: str        # file name (unique)
    data: bytes      # encoded image
    source: str      # the photo it is a copy of (its group)
    edit: str        # "" for the source photo itself
    kind: str        # kind of duplicate of the source ("" for the source)
    part: str        # tuning | heldout
    person: str = ""  # who, for photos of a known person


def part_of(source: str) -> str:
    if source in PEOPLE:
        return PEOPLE[source][1]
    return "tuning" if hashlib.sha1(source.encode()).digest()[0] % 2 == 0 else "heldout"


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _jpeg(a: np.ndarray, q: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _crop(a: np.ndarray, box: tuple[int, int, int, int], frac: float, rng: np.random.Generator) -> np.ndarray:
    """A crop keeping *frac* of the area at an aspect 0.6-1.6x the photo's, holding *box* when it fits."""
    h, w = a.shape[:2]
    aspect = rng.uniform(0.6, 1.6)
    cw = min(w, round(np.sqrt(frac * w * h * aspect * w / h) ))
    ch = min(h, round(frac * w * h / max(cw, 1)))
    x, y, bw, bh = box
    lo_x, hi_x = max(0, x + bw - cw), min(w - cw, x)
    lo_y, hi_y = max(0, y + bh - ch), min(h - ch, y)
    cx = int(rng.integers(lo_x, hi_x + 1)) if lo_x <= hi_x else int(np.clip(x + bw // 2 - cw // 2, 0, w - cw))
    cy = int(rng.integers(lo_y, hi_y + 1)) if lo_y <= hi_y else int(np.clip(y + bh // 2 - ch // 2, 0, h - ch))
    return np.ascontiguousarray(a[cy:cy + ch, cx:cx + cw])


def _caption(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = a.copy()
    h, w = a.shape[:2]
    scale = max(0.6, w / 400)
    for y in (int(h * 0.12), int(h * 0.93)):
        text = WORDS[int(rng.integers(len(WORDS)))]
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
        org = (max(2, (w - tw) // 2), y)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), max(3, round(6 * scale)), cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA)
    return out


def _border(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = a.shape[:2]
    top, bottom, left, right = (int(rng.uniform(0.05, 0.2) * s) for s in (h, h, w, w))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return cv2.copyMakeBorder(a, top, bottom, left, right, cv2.BORDER_CONSTANT, value=colour)


def _colour(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(8, 20)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    return (255 * (rgb / 255) ** rng.uniform(0.7, 1.4)).astype(np.uint8)


def _cutout(a: np.ndarray, box: tuple[int, int, int, int], bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = a.shape[:2]
    x, y, bw, bh = box
    m = 0.35
    x0, y0 = max(0, round(x - m * bw)), max(0, round(y - m * bh))
    x1, y1 = min(w, round(x + bw * (1 + m))), min(h, round(y + bh * (1 + m)))
    piece = a[y0:y1, x0:x1]
    ph, pw = piece.shape[:2]
    out = bg.copy()
    side = max(ph, pw)
    s = min(1.0, 0.7 * min(out.shape[:2]) / side)
    if s < 1:
        piece = cv2.resize(piece, (max(1, round(pw * s)), max(1, round(ph * s))), interpolation=cv2.INTER_AREA)
        ph, pw = piece.shape[:2]
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (pw // 2, ph // 2), (pw // 2, ph // 2), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, pw / 40))[..., None]
    oy = int(rng.integers(0, out.shape[0] - ph + 1))
    ox = int(rng.integers(0, out.shape[1] - pw + 1))
    region = out[oy:oy + ph, ox:ox + pw].astype(np.float32)
    out[oy:oy + ph, ox:ox + pw] = (mask * piece + (1 - mask) * region).astype(np.uint8)
    return out


def copies(a: np.ndarray, data: bytes, box: tuple[int, int, int, int], bg: np.ndarray, seed: int) -> list[tuple[str, bytes]]:
    """(edit, bytes) of every copy of photo *a* (RGB) whose file is *data*."""
    rng = np.random.default_rng(seed)
    h, w = a.shape[:2]
    half = cv2.resize(a, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return [("copy", data), ("half_q75", _jpeg(half, 75)), ("q30", _jpeg(a, 30)), ("colour", _jpeg(_colour(a, rng), 90)),
            ("crop60", _jpeg(_crop(a, box, 0.6, rng), 90)), ("crop40", _jpeg(_crop(a, box, 0.4, rng), 90)),
            ("crop20", _jpeg(_crop(a, box, 0.2, rng), 90)), ("border", _jpeg(_border(a, rng), 90)),
            ("caption", _jpeg(_caption(a, rng), 85)), ("cutout", _jpeg(_cutout(a, box, bg, rng), 90)),
            ("mirror", _jpeg(np.ascontiguousarray(a[:, ::-1]), 90))]


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _largest_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    best: dict[str, tuple[int, int, int, int]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            b = (int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))
            name = Path(r["file"]).name
            if name not in best or b[2] * b[3] > best[name][2] * best[name][3]:
                best[name] = b
    return best


def items(shared: Path, per_part: int = 40) -> list[Copy]:
    """The whole set: *per_part* faces/dev photos per part (plus the people and meme photos), with their copies."""
    dev = shared / "faces" / "dev"
    boxes = _largest_boxes(dev / "boxes.csv")
    with open(dev / "negatives.csv", newline="") as fh:
        backgrounds = [dev / "images" / Path(r["file"]).name for r in csv.DictReader(fh)]
    with open(shared / "faces" / "presence.csv", newline="") as fh:
        pres = {Path(r["file"]).name: (int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])) for r in csv.DictReader(fh) if r["x"]}
    sources: list[tuple[str, Path, tuple[int, int, int, int], str]] = []
    counts = {"tuning": 0, "heldout": 0}
    for name in sorted(boxes):
        part = part_of(name)
        b = boxes[name]
        if counts[part] < per_part and b[2] >= 40:
            counts[part] += 1
            sources.append((name, dev / "images" / name, b, ""))
    for name, (who, _) in PEOPLE.items():
        sources.append((name, shared / "faces" / "presence" / name, pres.get(name, (0, 0, 1, 1)), who))
    out: list[Copy] = []
    used = {"tuning": 0, "heldout": 0}
    for name, path, box, who in sources:
        data = path.read_bytes()
        a = _rgb(data)
        part = part_of(name)
        # Backgrounds are not shared within a part (two faces on one background are another matter).
        bg = _rgb(backgrounds[used[part] % len(backgrounds)].read_bytes())
        used[part] += 1
        stem = Path(name).stem
        out.append(Copy(name, data, name, "", "", part, who))
        for edit, blob in copies(a, data, box, bg, seed=int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")):
            ext = Path(name).suffix if edit == "copy" else ".jpg"
            out.append(Copy(f"{stem}__{edit}{ext}", blob, name, edit, EDITS[edit], part, who))
    with open(shared / "text" / "labels.csv", newline="") as fh:
        memes = [r for r in csv.DictReader(fh) if r["pair_key"]]
    by_key: dict[str, list[dict[str, str]]] = {}
    for r in memes:
        by_key.setdefault(r["pair_key"], []).append(r)
    for _, rs in sorted(by_key.items()):
        tpl = [r for r in rs if Path(r["file"]).name.startswith("mg_tpl_")]
        if len(rs) < 2 or len(tpl) != 1:
            continue
        src = Path(tpl[0]["file"]).name
        for r in rs:
            name = Path(r["file"]).name
            out.append(Copy(name, (shared / "text" / r["file"]).read_bytes(), src, "" if r is tpl[0] else "meme_caption",
                              "" if r is tpl[0] else "reframed", part_of(src)))
    return out


def write(images: Sequence[Copy], out: Path) -> None:
    """A folder tree per part (one label per part) and truth.csv."""
    rows = []
    for im in images:
        rel = Path(im.part) / "happy" / im.name
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(im.data)
        rows.append({"key": f"happy/{im.name}", "part": im.part, "source": im.source, "edit": im.edit, "kind": im.kind, "person": im.person})
    with open(out / "truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def score(images: Sequence[Copy], metrics: Sequence[dict[str, Any] | None], p: DedupParams) -> dict[str, Any]:
    """Pair precision/recall of the dedup stage's grouping over *images* (one part), by kind too.

    Positives: every pair of images of one source photo; recall by kind counts the pairs (photo,
    copy of that kind). Person merges: pairs of different photos of one person grouped together.
    """
    idx = [k for k, m in enumerate(metrics) if m is not None]
    t0 = time.perf_counter()
    groups = find_groups([metrics[k] for k in idx], p)  # type: ignore[misc]
    seconds = time.perf_counter() - t0
    root = dict(zip(idx, groups.root.tolist(), strict=True))
    tp = fp = fn = 0
    by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
    merged: set[tuple[str, str]] = set()
    wrong: list[tuple[str, str]] = []
    for a, b in combinations(range(len(images)), 2):
        if a not in root or b not in root:
            continue
        found = root[a] == root[b]
        x, y = images[a], images[b]
        same = x.source == y.source
        tp += same and found
        fn += same and not found
        fp += found and not same
        if found and not same:
            wrong.append((x.name, y.name))
        if same and (not x.edit or not y.edit):
            by_kind[(x.kind or y.kind)].append(int(found))
        if found and not same and x.person and y.person and set(x.person.split("+")) & set(y.person.split("+")):
            merged.add(tuple(sorted((x.source, y.source))))  # type: ignore[arg-type]
    people = {(im.source, im.person) for im in images if im.person}
    same_person = sum(1 for (_, x), (_, y) in combinations(sorted(people), 2) if set(x.split("+")) & set(y.split("+")))
    return {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0, "tp": tp, "fp": fp, "fn": fn,
            "by_kind": {k: (sum(v), len(v)) for k, v in by_kind.items() if v}, "person_merged": f"{len(merged)}/{same_person}",
            "no_face": sum(m is None for m in metrics), "verified": groups.verified, "proved": groups.proved, "n": len(idx),
            "seconds": seconds, "wrong": wrong[:5]}


def report(images: Sequence[Copy], through_crop: bool, params: Sequence[DedupParams], work: Path, detector: str = "") -> None:
    from bench.dedup import metrics_of

    t0 = time.perf_counter()
    metrics = metrics_of([(im.source, im.edit, im.data) for im in images], through_crop, work, detector)
    per = (time.perf_counter() - t0) / len(images)
    run = "--stages crop,dedup" if through_crop else "--stages dedup"
    print(f"{run}: per-item pass {1000 * per:.1f} ms/image (decode{', crop' if through_crop else ''}, hashes, keypoints)")
    print(f"{'part':<8} {'params':<34} {'prec':>6} {'recall':>6} {'fp':>4} {'fn':>5} {'persons':>7} {'noface':>6} {'cand/im':>8}  recall by kind (found/pairs)")
    for q in params:
        for part in ("tuning", "heldout"):
            sel = [k for k, im in enumerate(images) if im.part == part]
            r = score([images[k] for k in sel], [metrics[k] for k in sel], q)
            kinds = " ".join(f"{k}:{a}/{b}" for k, (a, b) in r["by_kind"].items())
            desc = ("verify" if q.verify else "pHash only (no verify)") + ("" if q.flips else ", no flips") + ("" if q.keypoints else ", no kp index")
            print(f"{part:<8} {desc:<34} {r['precision']:>6.3f} {r['recall']:>6.3f} {r['fp']:>4} {r['fn']:>5} {r['person_merged']:>7} "
                  f"{r['no_face']:>6} {r['verified'] / max(r['n'], 1):>8.2f}  {kinds}")
            if r["wrong"]:
                print(f"         merged wrongly, e.g.: {r['wrong']}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, help="also write the set as a folder tree with truth.csv")
    ap.add_argument("--per-part", type=int, default=40)
    ap.add_argument("--score", action="store_true", help="score the dedup stage on the set, without and through crop")
    ap.add_argument("--skip-crop", action="store_true")
    ap.add_argument("--skip-plain", action="store_true", help="score through crop only")
    ap.add_argument("--detector", default="", help="crop's face detector (default: crop's default)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    images = items(args.shared, args.per_part)
    parts = {p: sum(im.part == p for im in images) for p in ("tuning", "heldout")}
    print(f"{len(images)} images ({parts}) from {len({im.source for im in images})} photos")
    if args.out:
        write(images, args.out)
    if args.score:
        params = [DedupParams(verify=False), DedupParams(), DedupParams(flips=False), DedupParams(keypoints=False)]
        with tempfile.TemporaryDirectory() as tmp:
            for through in (False,) * (not args.skip_plain) + (True,) * (not args.skip_crop):
                report(images, through, params, Path(tmp), args.detector)
    return 0


if __name__ == "__main__":
    sys.exit(main())
