"""Benchmark of the ocr stage's text engines against a plain full-image tesseract call.

    python -m bench.ocr [--shared ../shared/data] [--engines ppocr,ppocr+tesseract,tesseract] [--repeat 7]

Per engine, in one run, one thread, through ``Ocr.process`` with the stage defaults (only the
engine changes):
  * recall and precision of ``overlay_text == 1`` on text/labels.csv (64 images: captioned memes,
    their clean templates, subtitles, documents). Precision counts every rejected image without
    overlaid text as wrong, including scene text (a sign, a book) and documents; ``P(any)``
    counts rejections of images with any text (``any_text == 1``) as right;
  * false rejections among text-free photos: faces/presence.csv (has_face == 1), faces/groups and
    the text/labels.csv rows with any_text == 0, minus the face photos that show text (backdrop
    logos, signs, a watermark: listed in TEXT_IN_PHOTO); the count over every face photo is
    printed too;
  * false rejections among face crops (``where=face``): the labelled face boxes of
    faces/presence.csv and faces/groups.csv at least 40 px wide, cut square with a 20% margin
    and handed to the stage as the crop stage would;
  * ms/image at 1920x1080: a real photo and a real captioned meme, upscaled and saved as JPEG
    (quality 90); bytes -> decode -> stage, median of --repeat runs, engines interleaved.
The baseline is ``pytesseract.image_to_data`` on the full-resolution image with tesseract's
defaults (psm 3, eng), rejecting on any word with confidence >= 60 and >= 3 letters or digits;
speed-ups are its time divided by the engine's. Tesseract runs with OMP_THREAD_LIMIT=1 throughout.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.executor import pin_threads
from stages.base import Context, Item
from stages.images import Decoded, View, encode_jpeg
from stages.ocr import Ocr, OcrParams
from stages.text import ENGINES, missing

#: Face photos whose pixels show text although the labels do not say so (seen by eye), plus those
#: whose presence.csv note mentions text. They are left out of the text-free set.
TEXT_IN_PHOTO = {
    "presence/fp_kate_siegel.jpg": "AT&T / SUBARU backdrop and a gettyimages watermark",
    "presence/fp_shea_whigham.jpg": "Sundance Film Festival backdrop",
    "groups/2008_002506.jpg": "'Puma' on a shirt",
}
NOTE_WORDS = ("text", "logo", "sign", "banner")
CLEAN_1080 = "text/images/mg_tpl_mini-keanu.jpg"
CAPTION_1080 = "text/images/mg_render_43_sparta.png"


@dataclass
class Sample:
    path: Path
    overlay: bool = False
    any_text: bool = False
    text_free: bool = False
    face: bool = False


@dataclass
class Result:
    name: str
    rejected: dict[Path, bool] = field(default_factory=dict)
    crops_rejected: list[str] = field(default_factory=list)
    ms: dict[str, list[float]] = field(default_factory=dict)


def load_samples(shared: Path) -> list[Sample]:
    out = []
    with open(shared / "text" / "labels.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            anyt = r["any_text"] == "1"
            out.append(Sample(shared / "text" / r["file"], r["overlay_text"] == "1", anyt, not anyt))
    with open(shared / "faces" / "presence.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["has_face"] != "1":
                continue
            shows = r["file"] in TEXT_IN_PHOTO or any(w in r["note"].lower() for w in NOTE_WORDS)
            out.append(Sample(shared / "faces" / r["file"], any_text=shows, text_free=not shows, face=True))
    for p in sorted((shared / "faces" / "groups").glob("*.jpg")):
        shows = f"groups/{p.name}" in TEXT_IN_PHOTO
        out.append(Sample(p, any_text=shows, text_free=not shows, face=True))
    return out


def face_crops(shared: Path) -> list[tuple[str, np.ndarray]]:
    """(file, square face cut with a 20% margin) for every labelled face box >= 40 px wide."""
    rows = []
    for name in ("presence.csv", "groups.csv"):
        with open(shared / "faces" / name, encoding="utf-8") as f:
            rows += [r for r in csv.DictReader(f) if r.get("x") and float(r["w"]) >= 40]
    out = []
    for r in rows:
        full = Decoded.from_bytes((shared / "faces" / r["file"]).read_bytes()).full()
        x, y, w, h = (float(r[k]) for k in "xywh")
        side = max(w, h) * 1.4
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        out.append((r["file"], full[y0 : int(cy + side / 2), x0 : int(cx + side / 2)]))
    return out


def baseline_rejects(rgb: np.ndarray) -> bool:
    import pytesseract

    d = pytesseract.image_to_data(rgb, output_type=pytesseract.Output.DICT)
    return any(float(c) >= 60 and sum(ch.isalnum() for ch in str(t)) >= 3 for t, c in zip(d["text"], d["conf"], strict=True))


def hd_jpeg(path: Path) -> bytes:
    """A real image upscaled to 1920x1080, as JPEG bytes."""
    import cv2

    rgb = Decoded.from_bytes(path.read_bytes()).full()
    return encode_jpeg(cv2.resize(rgb, (1920, 1080), interpolation=cv2.INTER_CUBIC), 90)


def run(shared: Path, engines: list[str], repeat: int) -> list[Result]:
    os.environ["OMP_THREAD_LIMIT"] = "1"
    pin_threads()
    samples = load_samples(shared)
    stages: dict[str, Callable[[Decoded], bool]] = {}
    ctx = Context(Path("."))

    def rejects(stage: Ocr) -> Callable[[Decoded], bool]:
        return lambda im: stage.process(Item("x", "x", "x"), im, ctx).status == "rejected"

    results = {n: Result(n) for n in ("baseline", *engines)}
    crops = face_crops(shared)
    for name in engines:
        stage = Ocr(OcrParams(engine=name))
        stage.ensure_setup()
        stages[name] = rejects(stage)
        on_face = Ocr(OcrParams(engine=name, where="face"))
        on_face.ensure_setup()
        for file, crop in crops:
            out = on_face.process(Item(file, file, file), Decoded.from_bytes(b""), Context(Path("."), view=View(crop)))
            if out.status == "rejected":
                results[name].crops_rejected.append(file)
    stages["baseline"] = lambda im: baseline_rejects(im.full())
    for file, crop in crops:
        if baseline_rejects(crop):
            results["baseline"].crops_rejected.append(file)
    for s in samples:
        data = s.path.read_bytes()
        for n, fn in stages.items():
            results[n].rejected[s.path] = fn(Decoded.from_bytes(data))
    hd = {"clean": hd_jpeg(shared / CLEAN_1080), "caption": hd_jpeg(shared / CAPTION_1080)}
    for fn in stages.values():  # warm-up (first tesseract call, first session run)
        fn(Decoded.from_bytes(hd["clean"]))
    for _ in range(repeat):
        for kind, data in hd.items():
            for n, fn in stages.items():
                t0 = time.perf_counter()
                fn(Decoded.from_bytes(data))
                results[n].ms.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
    return [results["baseline"], *(results[n] for n in engines)]


def report(results: list[Result], samples: list[Sample], n_crops: int) -> str:
    text = [s for s in samples if not s.face]
    tf = [s for s in samples if s.text_free]
    faces = [s for s in samples if s.face]
    base = {k: statistics.median(v) for k, v in results[0].ms.items()}
    lines = [f"text set: {len(text)} images, {sum(s.overlay for s in text)} with overlay_text; "
             f"text-free photos: {len(tf)}; face photos: {len(faces)}; face crops: {n_crops}",
             f"{'engine':<17}{'recall':>7}{'P(ovl)':>8}{'P(any)':>8}{'false rej text-free':>21}{'face photos rej':>17}"
             f"{'crops rej':>11}{'ms clean':>10}{'ms caption':>11}{'speed-up':>10}"]
    misses: list[str] = []
    for r in results:
        rej = r.rejected
        tp = sum(rej[s.path] for s in text if s.overlay)
        npos = sum(s.overlay for s in text)
        nrej = sum(rej[s.path] for s in text)
        any_ok = sum(rej[s.path] for s in text if s.any_text)
        fr = [s for s in tf if rej[s.path]]
        fr_faces = sum(rej[s.path] for s in faces)
        ms = {k: statistics.median(v) for k, v in r.ms.items()}
        name = "baseline" if r.name == "baseline" else r.name
        lines.append(f"{name:<17}{tp / npos:>7.2f}{(tp / nrej if nrej else 0):>8.2f}{(any_ok / nrej if nrej else 0):>8.2f}"
                     f"{f'{len(fr)}/{len(tf)} ({len(fr) / len(tf):.1%})':>21}{f'{fr_faces}/{len(faces)}':>17}"
                     f"{f'{len(r.crops_rejected)}/{n_crops}':>11}{ms['clean']:>10.0f}{ms['caption']:>11.0f}{base['clean'] / ms['clean']:>9.1f}x")
        missed = [s.path.name for s in text if s.overlay and not rej[s.path]]
        wrong = [s.path.name for s in fr]
        face_rej = [s.path.name for s in faces if rej[s.path]]
        misses.append(f"  {name}: missed {missed or '-'}; false rejections {wrong or '-'}; crops {r.crops_rejected or '-'}; "
                      f"face photos rejected {face_rej or '-'}")
    lines += ["", "speed-up: baseline ms / engine ms on the clean 1920x1080 photo (decode included, one thread)", *misses]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.ocr", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the shared sample data folder (default: ../shared/data)")
    p.add_argument("--engines", default=",".join(sorted(ENGINES)), help="comma-separated engines to measure")
    p.add_argument("--repeat", type=int, default=7, help="timing runs per 1920x1080 image (median reported)")
    args = p.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            p.error(f"unknown engine {e!r}; available: {', '.join(sorted(ENGINES))}")
        if why := missing(e, "eng+kor"):
            print(f"bench.ocr: {why}", file=sys.stderr)
            return 2
    if why := missing("tesseract", "eng"):
        print(f"bench.ocr: the baseline needs tesseract: {why}", file=sys.stderr)
        return 2
    if not (args.shared / "text" / "labels.csv").is_file():
        p.error(f"no shared data at {args.shared} (give --shared)")
    results = run(args.shared, engines, args.repeat)
    print(report(results, load_samples(args.shared), len(face_crops(args.shared))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
