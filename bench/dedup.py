"""Benchmark of the dedup stage: near-duplicate precision/recall on real photos, and join scale.

    python -m bench.dedup [--shared ../shared/data] [--sizes 100000,500000] [--skip-scale] [--skip-edits]
                          [--step-n 500000 [--step-crop same|other]] [--index-n 500000]

Edits set (``../shared/data/faces``): every photo of faces/presence and faces/groups ("photos"),
and the faces cut from them ("faces": the groups.csv boxes and one box per face of the
single-person photos, OpenCV Haar boxes checked by eye, 20% margin), each with six known edits:
JPEG q40, resized to half, cropped by 10% (centre, top-left or bottom-right by turns), brightness
+20% and -20%, mirrored. Ground truth: an edit is a duplicate of its original and of the other
edits of it; two faces cut from the same frame at different sizes (obama/obama_small, biden in
two_people/biden) are the same picture. Everything else is distinct, among them several photos
each of Obama and Biden. Hashes come from the stage's own per-item code on the encoded bytes,
groups from its dataset-step join; precision and recall are over pairs of images (i < j). A
"through crop" set runs the photos and their edits through the crop stage (its default detector)
first, as a run with ``--stages crop,dedup`` does. Further crops (10% off one side, 6% and 14%
centred) are reported apart: they show where the 90% windows stop helping.

Verification (``--skip-verify`` to leave out): on the near-duplicate development set of
bench.dupset (real photos and their copies, per-item pass without crop), the cost of one
verification per candidate pair (true pairs and random pairs apart), the keypoint index on growing
subsets, the candidates verified per image, and the decision step with and without verification
(baseline: the pHash-only decision on the same records). These are extrapolated to 500k images in
the printout, and say so.

The dataset step at scale (``--step-n``), the keypoint index alone on a synthetic bank
(``--index-n``) and the join at 100k-500k hashes (``--sizes``) are in bench.dedup_scale.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from bench.dedup_scale import index_bench, scale_bench, step_bench
from stages import dupindex, dupkeys, dupverify
from stages.base import Context, Item
from stages.dedup import Dedup, DedupParams, hashes
from stages.dupgroups import find_groups
from stages.images import Decoded, encode_png

# Haar boxes (x, y, side) of the single-person and two-person photos, each checked by eye.
FACES = {
    "fr_obama.jpg": [(343, 92, 299)], "fr_obama1.jpg": [(536, 144, 444)], "fr_obama3.jpg": [(632, 259, 329)],
    "fr_obama_and_biden.jpg": [(1117, 362, 232), (737, 412, 202)], "fr_obama_small.jpg": [(94, 42, 136)],
    "fr_two_people.jpg": [(232, 26, 181), (788, 64, 170)], "fr_biden.jpg": [(427, 209, 322)],
    "fr_32bit.png": [(142, 244, 331)], "df_couple.jpg": [(1439, 344, 666), (316, 538, 772)],
    "dl_tom_cruise.jpg": [(49, 206, 457)], "fp_angelina_jolie.jpg": [(606, 345, 696)],
    "fp_kate_siegel.jpg": [(505, 120, 290)], "fp_paul_rudd.jpg": [(192, 440, 1180)],
    "fp_shea_whigham.jpg": [(780, 389, 527)], "fr_lin-manuel-miranda.png": [(236, 126, 364)],
    "sk_astronaut.png": [(177, 66, 95)], "df_img47_webp_named_jpg.jpg": [(245, 319, 816)], "mt_ivan.jpg": [(271, 91, 63)],
}
# Who is in a face cut, or in the face the crop stage keeps (the largest) of a photo.
PERSON = {"fr_obama.jpg#0": "obama", "fr_obama1.jpg#0": "obama", "fr_obama3.jpg#0": "obama",
          "fr_obama_and_biden.jpg#0": "obama", "fr_obama_small.jpg#0": "obama", "fr_two_people.jpg#0": "obama",
          "fr_32bit.png#0": "obama", "fr_obama_and_biden.jpg#1": "biden", "fr_two_people.jpg#1": "biden",
          "fr_biden.jpg#0": "biden"}
PERSON_PHOTO = {"fr_obama.jpg": "obama", "fr_obama1.jpg": "obama", "fr_obama3.jpg": "obama", "fr_obama_small.jpg": "obama",
                "fr_obama_and_biden.jpg": "obama", "fr_two_people.jpg": "obama", "fr_32bit.png": "obama", "fr_biden.jpg": "biden"}
# Face cuts of one frame saved at two sizes: the same picture (normalised cross-correlation 0.98 and 0.99).
SAME_FRAME = {"fr_obama_small.jpg#0": "fr_obama.jpg#0", "fr_biden.jpg#0": "fr_two_people.jpg#1"}
# Photos cut from one frame with other framings (30-60% crops): neither duplicates nor distinct; not scored.
RELATED = {"fr_obama.jpg": "obama-frame", "fr_obama_small.jpg": "obama-frame", "fr_obama_partial_face.jpg": "obama-frame",
           "fr_obama_partial_face2.jpg": "obama-frame", "fr_two_people.jpg": "biden-frame", "fr_biden.jpg": "biden-frame"}
EDITS = ("q40", "resize", "crop10", "bright+20", "bright-20", "flip")
EXTRA = ("crop10-left", "crop6", "crop14")


def _jpeg(a: np.ndarray, q: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _crop(a: np.ndarray, frac: float, where: str) -> np.ndarray:
    h, w = a.shape[:2]
    dh, dw = round(h * frac), round(w * frac)
    if where == "centre":
        return a[dh // 2:h - (dh - dh // 2), dw // 2:w - (dw - dw // 2)]
    if where == "left":
        return a[:, dw:]
    return a[dh:, dw:] if where == "top-left" else a[:h - dh, :w - dw]


def edit(a: np.ndarray, name: str, n: int) -> bytes:
    """Encoded bytes of edit *name* of RGB image *a* (*n* picks the crop placement)."""
    if name == "q40":
        return _jpeg(a, 40)
    out = {
        "resize": lambda: cv2.resize(a, (max(1, a.shape[1] // 2), max(1, a.shape[0] // 2)), interpolation=cv2.INTER_AREA),
        "crop10": lambda: _crop(a, 0.1, ("centre", "top-left", "bottom-right")[n % 3]),
        "bright+20": lambda: np.clip(a.astype(np.float32) * 1.2, 0, 255).astype(np.uint8),
        "bright-20": lambda: (a.astype(np.float32) * 0.8).astype(np.uint8),
        "flip": lambda: np.ascontiguousarray(a[:, ::-1]),
        "crop10-left": lambda: _crop(a, 0.1, "left"),
        "crop6": lambda: _crop(a, 0.06, "centre"),
        "crop14": lambda: _crop(a, 0.14, "centre"),
    }[name]()
    return encode_png(np.ascontiguousarray(out))


def units(shared: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Set name -> [(unit id, encoded original)]: whole photos and the faces cut from them."""
    faces = shared / "faces"
    photos = sorted((faces / "presence").iterdir()) + sorted((faces / "groups").iterdir())
    cuts: list[tuple[str, bytes]] = []
    boxes = {f: list(b) for f, b in FACES.items()}
    with open(faces / "groups.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            boxes.setdefault(Path(r["file"]).name, []).append((int(r["x"]), int(r["y"]), int(r["w"])))
    for p in photos:
        if p.name not in boxes:
            continue
        rgb = np.asarray(Image.open(p).convert("RGB"))
        h, w = rgb.shape[:2]
        for i, (x, y, s) in enumerate(boxes[p.name]):
            m = round(0.2 * s)
            cuts.append((f"{p.name}#{i}", encode_png(np.ascontiguousarray(rgb[max(0, y - m):min(h, y + s + m), max(0, x - m):min(w, x + s + m)]))))
    return {"photos": [(p.name, p.read_bytes()) for p in photos], "faces": cuts}


def build(originals: list[tuple[str, bytes]], edits: Sequence[str]) -> list[tuple[str, str, bytes]]:
    """[(unit id, edit name or "", bytes)] of the originals and their edits."""
    out = []
    for n, (uid, data) in enumerate(originals):
        out.append((uid, "", data))
        rgb = Decoded.from_bytes(data).full()
        rgb = np.repeat(rgb[:, :, None], 3, axis=2) if rgb.ndim == 2 else rgb
        out += [(uid, e, edit(rgb, e, n)) for e in edits]
    return out


def metrics_of(images: list[tuple[str, str, bytes]], through_crop: bool, work: Path, detector: str = "") -> list[dict[str, Any] | None]:
    """The dedup stage's per-item metrics of each image (None: crop found no face)."""
    dedup = Dedup()
    crop = None
    if through_crop:
        from stages.crop import Crop, CropParams

        crop = Crop(CropParams(detector=detector) if detector else CropParams())
        crop.ensure_setup()
    out: list[dict[str, Any] | None] = []
    for k, (_, _, data) in enumerate(images):
        item = Item(f"img{k:05d}.png", "", "")
        image = Decoded.from_bytes(data)
        ctx = Context(work)
        if crop is not None:
            o = crop.process(item, image, ctx)
            o = o[0] if isinstance(o, list) else o
            if o.status != "kept":
                out.append(None)
                continue
            ctx = Context(work, o.view, {"crop": o})
        o = dedup.process(item, image, ctx)
        out.append({**o.metrics, "orb": o.blob})  # the keypoints as hashes() hands them (find_groups reads them there)
    return out


def evaluate(images: list[tuple[str, str, bytes]], metrics: list[dict[str, Any] | None], p: DedupParams) -> dict[str, Any]:
    """Pair precision/recall, per-edit recall, same-person merges, under parameters *p*."""
    idx = [k for k, m in enumerate(metrics) if m is not None]
    groups = find_groups([metrics[k] for k in idx], p).root  # type: ignore[misc]
    root = dict(zip(idx, groups.tolist(), strict=True))
    faces = all("#" in uid for uid, _, _ in images)
    src = [SAME_FRAME.get(uid, uid) if faces else uid for uid, _, _ in images]
    cluster = [s if faces else RELATED.get(s, s) for s in src]
    tp = fp = fn = 0
    for a, b in combinations(range(len(images)), 2):
        same = src[a] == src[b]
        if (not same and cluster[a] == cluster[b]) or metrics[a] is None or metrics[b] is None:
            continue  # related framings of one frame, or an image crop refused: not scored
        found = a in root and b in root and root[a] == root[b]
        tp += same and found
        fp += found and not same
        fn += same and not found
    per_edit: dict[str, list[int]] = {}
    first = {s: k for k, (s, (_, e, _)) in reversed(list(enumerate(zip(src, images, strict=True)))) if not e}
    for k, (_, e, _) in enumerate(images):
        o = first[src[k]]
        if e and k in root and o in root:
            per_edit.setdefault(e, []).append(int(root[k] == root[o]))
    who = PERSON if faces else PERSON_PHOTO
    persons = [(k, who[uid]) for k, (uid, e, _) in enumerate(images) if not e and uid in who]
    pairs = [(a, b) for (a, pa), (b, pb) in combinations(persons, 2) if pa == pb and cluster[a] != cluster[b]]
    merged = sum(1 for a, b in pairs if a in root and b in root and root[a] == root[b])
    same_person = len(pairs)
    return {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0,
            "tp": tp, "fp": fp, "fn": fn, "per_edit": {e: sum(v) / len(v) for e, v in per_edit.items()},
            "person_merged": f"{merged}/{same_person}", "no_face": sum(m is None for m in metrics)}


def edits_bench(shared: Path, detector: str = "") -> None:
    sets = units(shared)
    print(f"edits set: {len(sets['photos'])} photos, {len(sets['faces'])} faces; edits {', '.join(EDITS)}")
    hdr = f"{'set':<16} {'radius':>6} {'flips':>5} {'crops':>5} {'precision':>9} {'recall':>7} {'fp':>4} {'fn':>4}  same-person merged  recall by edit"
    with tempfile.TemporaryDirectory() as tmp:
        with open(shared / "faces" / "presence.csv", newline="") as fh:
            single = {Path(r["file"]).name for r in csv.DictReader(fh) if r["n_faces"] == "1"}
        runs = [("photos", sets["photos"], False), ("faces", sets["faces"], False),
                ("photos>crop", [u for u in sets["photos"] if u[0] in single], True)]
        for name, originals, through in runs:
            images = build(originals, EDITS)
            try:
                metrics = metrics_of(images, through, Path(tmp), detector)
            except Exception as e:  # the crop stage's detector missing: say so, keep the rest
                print(f"{name}: skipped ({type(e).__name__}: {e})")
                continue
            if through:
                missed = sum(m is None for m in metrics)
                print(f"{name}: the {len(originals)} single-face photos and their edits through the crop stage (detector "
                      f"{detector or 'default'}, other settings default); no face kept in {missed} of {len(metrics)} images (not scored)")
            print(hdr)
            for radius in (0, 2, 4, 6, 8):
                for flips, crops in ((True, True), (True, False)) if radius == 4 else ((True, True),):
                    r = evaluate(images, metrics, DedupParams(radius=radius, flips=flips, crops=crops))
                    edits = " ".join(f"{e}:{v:.2f}" for e, v in r["per_edit"].items())
                    print(f"{name:<16} {radius:>6} {flips!s:>5} {crops!s:>5} {r['precision']:>9.3f} {r['recall']:>7.3f} "
                          f"{r['fp']:>4} {r['fn']:>4}  {r['person_merged']:>18}  {edits}")
            if not through:
                extra = build(originals, EXTRA)
                r = evaluate(extra, metrics_of(extra, False, Path(tmp)), DedupParams())
                print(f"{name:<16} default, further crops: " + " ".join(f"{e}:{v:.2f}" for e, v in r["per_edit"].items()))
            print()


# -- verification -------------------------------------------------------------------------------
def verify_bench(shared: Path, target: int = 500_000, cores: int = 2) -> None:
    from bench.dupset import items

    images = items(shared, 40)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = metrics_of([(im.source, im.edit, im.data) for im in images], False, Path(tmp))
    recs: list[dict[str, Any]] = [m for m in metrics if m is not None]
    feats = [dupkeys.unpack(m["orb"]) for m in recs]
    sizes = [len(m["orb"]) for m in recs]
    print(f"verification: development set of bench.dupset, {len(recs)} images, keypoints {np.mean([len(f.desc) for f in feats if f]):.0f} "
          f"per image, packed {np.mean(sizes) / 1024:.2f} kB of bytes per image (x {target:,} = {np.mean(sizes) * target / 2**30:.2f} GiB; "
          f"a Bank holds {sum(x.nbytes for x in vars(dupkeys.Bank(1)).values() if isinstance(x, np.ndarray))} B an image whatever the count)")
    rng = np.random.default_rng(0)
    true = [(a, b) for a, b in combinations(range(len(images)), 2) if images[a].source == images[b].source][:2000]
    rand = [(int(a), int(b)) for a, b in rng.integers(0, len(recs), (2000, 2)) if a != b and images[a].source != images[b].source]
    per_pair = {}
    for what, pairs in (("same photo", true), ("different photos", rand)):
        t0 = time.perf_counter()
        for a, b in pairs:  # as the dataset step calls it: a pair that cannot reach min_inliers stops early
            dupverify.verify(feats[a], feats[b], DedupParams().min_inliers)
        per_pair[what] = (time.perf_counter() - t0) / len(pairs)
        print(f"  verify(), {what:<17} {len(pairs):>5} pairs  {1e6 * per_pair[what]:>7.0f} us/pair")
    # As the dataset step verifies its candidates: pairs sorted by their first image, screened in batches.
    bank = dupkeys.Bank.of([m["orb"] for m in recs])
    for what, pairs in (("same photo", true), ("different photos", rand)):
        ab = np.array(sorted(pairs), np.int64).reshape(-1, 2)
        t0 = time.perf_counter()
        found = dupverify.prove(bank, ab[:, 0], ab[:, 1], np.ones(len(ab), np.uint8), list(range(len(ab))),
                                DedupParams().min_inliers, DedupParams().min_overlap)
        per_pair[what] = (time.perf_counter() - t0) / len(ab)
        print(f"  prove(), {what:<18} {len(ab):>5} pairs  {1e6 * per_pair[what]:>7.0f} us/pair"
              f"  ({sum(e.proves(DedupParams().min_inliers, DedupParams().min_overlap) for e in found)} proved)")
    print(f"  {'keypoint index':<28} {'images':>7} {'seconds':>8} {'pairs/image':>11}")
    idx_rate = 0.0
    for n in (len(recs) // 4, len(recs) // 2, len(recs)):
        t0 = time.perf_counter()
        bank = dupkeys.Bank.of([m["orb"] for m in recs[:n]])
        a, _, _ = dupindex.keypoint_pairs(bank.desc, bank.count)
        sec = time.perf_counter() - t0
        idx_rate = sec / n
        print(f"  {'':<28} {n:>7} {sec:>8.2f} {len(a) / n:>11.1f}")
    distinct = [m for m, im in zip(metrics, images, strict=True) if m is not None and not im.edit]
    g0 = find_groups(distinct, DedupParams())
    print(f"  candidates verified per image among the {len(distinct)} distinct photos alone (no copies): {g0.verified / len(distinct):.2f}"
          f" ({g0.proved} proved)")
    base = DedupParams(verify=False)
    t0 = time.perf_counter()
    find_groups(recs, base)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = find_groups(recs, DedupParams())
    t_full = time.perf_counter() - t0
    cand = g.verified / len(recs)
    print(f"  decision, pHash only (baseline)       {t_base:>7.2f} s  1.00x")
    print(f"  decision, default (verification on)   {t_full:>7.2f} s  {t_full / max(t_base, 1e-9):.2f}x  "
          f"({g.verified} candidates verified, {cand:.2f} per image, {g.proved} proved)")
    us = per_pair["different photos"]
    print(f"  EXTRAPOLATED to {target:,} images on {cores} cores, verification alone: {target:,} x {cand:.2f} candidates x "
          f"{1e6 * us:.0f} us / {cores} cores = {target * cand * us / cores:.0f} s (at this set's density, where every photo has 11 copies);"
          f" at 1 candidate per image: {target * us / cores:.0f} s")
    print(f"  EXTRAPOLATED keypoint index, linear in images from this set: {target * idx_rate:.0f} s; descriptors in memory "
          f"{target * dupindex.INDEXED * 32 / 2**30:.2f} GiB (the pairs it yields grow faster than linearly: not measured at that size)")


def _fer_records(args: tuple[list[bytes], int, int]) -> list[dict[str, Any]]:
    faces, start, count = args
    cv2.setNumThreads(1)
    return [hashes(g, (48, 48)) for g in (np.asarray(Image.open(io.BytesIO(b)).convert("L")) for b in faces[start:start + count])]


def fer_bench(shared: Path, target: int = 500_000, cores: int = 2) -> None:
    """The decision on the 28,709 real FER2013 train faces (531+ pixel-identical groups), with and without verification."""
    import joblib

    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        faces = [z.read(m) for m in sorted(z.namelist()) if m.endswith(".jpg")]
    step = 5000
    parts = joblib.Parallel(n_jobs=cores)(joblib.delayed(_fer_records)((faces, s, step)) for s in range(0, len(faces), step))
    recs = [m for part in parts for m in part]
    n = len(recs)
    print(f"FER2013 train, {n} faces (48 px): packed keypoints {np.mean([len(m['orb']) for m in recs]) / 1024:.2f} kB of bytes per image")
    t0 = time.perf_counter()
    bank = dupkeys.Bank.of([m["orb"] for m in recs])
    a, _, _ = dupindex.keypoint_pairs(bank.desc, bank.count)
    t_idx = time.perf_counter() - t0
    t0 = time.perf_counter()
    g0 = find_groups(recs, DedupParams(verify=False))
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = find_groups(recs, DedupParams())
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    g1 = find_groups(recs, DedupParams(keypoints=False))
    t_nokp = time.perf_counter() - t0
    grouped = lambda r: int((np.bincount(r) > 1).sum())  # noqa: E731
    print(f"  keypoint index alone (unpacking included)  {t_idx:>7.2f} s  {len(a) / n:.2f} candidate pairs per image")
    print(f"  decision, pHash only (baseline)            {t_base:>7.2f} s  1.00x  {grouped(g0.root)} groups")
    print(f"  decision, default (verification on)        {t_full:>7.2f} s  {t_full / t_base:.2f}x  {grouped(g.root)} groups, "
          f"{g.verified} verified ({g.verified / n:.2f} per image), {g.proved} proved")
    print(f"  decision, verification, no keypoint index  {t_nokp:>7.2f} s  {t_nokp / t_base:.2f}x  {grouped(g1.root)} groups, "
          f"{g1.verified} verified ({g1.verified / n:.2f} per image), {g1.proved} proved")
    print(f"  EXTRAPOLATED, linear, to {target:,} such images: default {t_full * target / n:.0f} s, without the keypoint index "
          f"{t_nokp * target / n:.0f} s, pHash only {t_base * target / n:.0f} s ({cores} cores: the pHash join and the verification use both)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sizes", default="100000,500000", help="hash-set sizes for the join timing")
    ap.add_argument("--skip-edits", action="store_true")
    ap.add_argument("--crop-detector", default="", help="crop stage detector for the photos>crop set (default: crop's own)")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--step-n", type=int, default=0, help="also time the dedup dataset step on this many images, with its peak memory")
    ap.add_argument("--step-crop", choices=("same", "other"), default="",
                    help="--step-n as through crop: whole-image hashes (the face's, or another image's) and keypoints too")
    ap.add_argument("--index-n", type=int, default=0, help="also time the keypoint index alone on a synthetic bank of this many images")
    ap.add_argument("--baselines-upto", type=int, default=100_000, help="run the faiss baselines up to this size")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if not args.skip_edits:
        edits_bench(args.shared, args.crop_detector)
    if not args.skip_verify:
        verify_bench(args.shared)
        fer_bench(args.shared)
    if args.step_n:
        step_bench(args.shared, args.step_n, crop=args.step_crop)
    if args.index_n:
        index_bench(args.index_n)
    if not args.skip_scale:
        scale_bench(args.shared, [int(s) for s in args.sizes.split(",")], args.baselines_upto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
