"""The whole per-image pass against the cost of a JPEG transcode, measured in one run.

    python -m bench.e2e [--n 240] [--workers 2] [--seed-n 12] [--data DIR] [--keep DIR]

Every contender is a fresh process timed from start to exit (interpreter and worker start-up
included) over the same files, page cache warm; figures are wall milliseconds per input image:

* floor: a pool of ``--workers`` processes, each PIL decode + quality-40 encode + write per file
  (what any Python tool pays to transcode these photos), timed first and last; ratios use the mean;
* facesift ``run`` with ``--stages compress``, then adding crop, ocr, and quality,dedup,split (the
  whole pass, with ``--profile``: where the workers' time went), ``--stages crop`` alone, the whole
  pass with one worker (speed-up from 1 to ``--workers``), and
  ``--stages crop,ocr,quality,dedup,split`` over the compress run's outputs (the second pass of a
  user who compressed first; label files copied beside them);
* the seed scripts' way, one process over the first ``--seed-n`` files: ``cv2.imread`` (through
  ASCII-named links) + ``cv2.imwrite`` quality 40, Haar (``frontalface_default``, 1.1, 5) on the
  full-resolution gray image, the largest face cut and written, ``pytesseract.image_to_data`` on the
  cut (a word with conf >= 60 and >= 3 letters or digits is text).

Input: ``bench.generate --sizes 4000x3000 --seed 7`` (AIHub-like photos, a real face pasted on a
photo-like background), unless ``--data`` is given.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SUFFIXES = {".jpg", ".jpeg", ".png"}
WHOLE = "compress,crop,ocr,quality,dedup,split"
SECOND = "crop,ocr,quality,dedup,split"


def floor_worker(args: tuple[str, str]) -> int:
    import io

    from PIL import Image

    src, dst = args
    with Image.open(src) as im:
        im.load()
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=40)
    Path(dst).write_bytes(buf.getvalue())
    return len(buf.getvalue())


def floor(files: list[Path], out: Path, workers: int) -> None:
    from multiprocessing import get_context

    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(f), str(out / f"{i:06d}.jpg")) for i, f in enumerate(files)]
    with get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(floor_worker, jobs, chunksize=4):
            pass


def seed_style(files: list[Path], out: Path) -> None:
    """The seed scripts' loop: cv2 file I/O, Haar on the full image, tesseract on the face."""
    import cv2
    import pytesseract

    cv2.setNumThreads(1)
    os.environ["OMP_THREAD_LIMIT"] = "1"
    links = out / "links"
    links.mkdir(parents=True, exist_ok=True)
    haar = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    for i, f in enumerate(files):
        link = links / f"{i:06d}.jpg"
        os.symlink(f, link)
        img = cv2.imread(str(link))
        cv2.imwrite(str(out / f"{i:06d}_q40.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
        faces = haar.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 1.1, 5)
        if len(faces) == 0:
            continue
        x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
        face = img[y:y + h, x:x + w]
        cv2.imwrite(str(out / f"{i:06d}_face.jpg"), face)
        d = pytesseract.image_to_data(cv2.cvtColor(face, cv2.COLOR_BGR2RGB), output_type=pytesseract.Output.DICT)
        _ = any(float(c) >= 60 and sum(ch.isalnum() for ch in str(t)) >= 3 for t, c in zip(d["text"], d["conf"], strict=True))


#: CPU seconds (user + system) of each timed process and the processes it waited for, in order
CPU: list[float] = []


def timed_process(argv: list[str]) -> float:
    """Wall seconds of a child process from start to exit (its CPU seconds go to ``CPU``); its
    failure stops the benchmark."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    if proc.returncode != 0:
        raise SystemExit(f"bench.e2e: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def facesift(data: Path, work: Path, stages: str, workers: int, profile: bool = False,
             crop: Sequence[str] = ()) -> float:
    argv = [sys.executable, "-m", "pipeline", "run", "--input", str(data), "--out", str(work), "--stages", stages,
            "--workers", str(workers), "-q"]
    if "crop" in stages.split(","):
        argv += crop
    return timed_process(argv + (["--profile"] if profile else []))


def second_pass_input(data: Path, work: Path, dst: Path) -> Path:
    """The compress run's outputs with the input's non-image files (labels) beside them."""
    shutil.copytree(work / "images" / "compressed", dst)
    for f in data.rglob("*"):
        if f.is_file() and f.suffix.lower() not in SUFFIXES:
            (dst / f.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / f.relative_to(data))
    return dst


def read_profile(work: Path) -> list[dict[str, str]]:
    with open(work / "reports" / "profile.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="input folder (default: generate --n AIHub-like 4000x3000 photos)")
    p.add_argument("--n", type=int, default=240, help="photos to generate when --data is not given (default 240)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the floor and of facesift (default 2)")
    p.add_argument("--seed-n", type=int, default=12, help="photos the seed-style loop runs over (default 12; it is slow)")
    p.add_argument("--keep", type=Path, help="keep the workspaces in this folder (default: a temporary one, removed)")
    p.add_argument("--no-profile", action="store_true", help="leave out --profile (to measure a version without it)")
    p.add_argument("--detector", default="", help="crop's --detector in every facesift run (default: crop's default)")
    p.add_argument("--crop-coarse", action="store_true", help="crop's --crop-coarse in every facesift run")
    p.add_argument("--role", choices=("floor", "seed"), help=argparse.SUPPRESS)
    p.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:  # a child process of the benchmark
        files = [Path(line) for line in args.files.read_text(encoding="utf-8").splitlines()]
        floor(files, args.out, args.workers) if args.role == "floor" else seed_style(files, args.out)
        return 0
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="facesift-e2e-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, tmp)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    data = args.data
    if data is None:
        from bench import generate

        data = tmp / "data"
        generate.main(["--out", str(data), "--n", str(args.n), "--sizes", "4000x3000", "--seed", "7"])
    files = sorted(f for f in data.rglob("*") if f.suffix.lower() in SUFFIXES)
    n, w = len(files), args.workers
    crop = (["--detector", args.detector] if args.detector else []) + (["--crop-coarse"] if args.crop_coarse else [])
    for f in files:  # warm the page cache: no contender pays for cold reads
        f.read_bytes()
    lists = {}
    for name, subset in (("all", files), ("seed", files[: args.seed_n])):
        lists[name] = tmp / f"{name}.txt"
        lists[name].write_text("\n".join(map(str, subset)), encoding="utf-8")
    me = [sys.executable, "-m", "bench.e2e", "--workers", str(w)]

    def run_floor(tag: str) -> float:
        return timed_process([*me, "--role", "floor", "--files", str(lists["all"]), "--out", str(tmp / f"floor{tag}")])

    t: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        t[name] = seconds
        cpu[name] = CPU[-1]

    record("floor0", run_floor("0"))
    record("compress", facesift(data, tmp / "w_compress", "compress", w))
    record("+crop", facesift(data, tmp / "w_crop2", "compress,crop", w, crop=crop))
    record("+ocr", facesift(data, tmp / "w_ocr", "compress,crop,ocr", w, crop=crop))
    record("whole", facesift(data, tmp / "w_whole", WHOLE, w, profile=not args.no_profile, crop=crop))
    record("crop", facesift(data, tmp / "w_crop", "crop", w, crop=crop))
    second = second_pass_input(data, tmp / "w_compress", tmp / "compressed")
    for f in second.rglob("*"):
        if f.is_file():
            f.read_bytes()
    record("second", facesift(second, tmp / "w_second", SECOND, w, crop=crop))
    record("whole1", facesift(data, tmp / "w_whole1", WHOLE, 1, crop=crop))
    seed_n = min(args.seed_n, n)
    record("seed", timed_process([*me, "--role", "seed", "--files", str(lists["seed"]), "--out", str(tmp / "seed")]))
    record("floor1", run_floor("1"))

    size = sum(f.stat().st_size for f in files)
    ms = {k: 1000 * v / (seed_n if k == "seed" else n) for k, v in t.items()}
    cms = {k: 1000 * v / (seed_n if k == "seed" else n) for k, v in cpu.items()}
    fl = (ms["floor0"] + ms["floor1"]) / 2
    cfl = (cms["floor0"] + cms["floor1"]) / 2
    print(f"{n} photos, {size / 1e6:.0f} MB, {w} workers, python {sys.version.split()[0]}, {os.cpu_count()} cores; "
          f"wall per image of whole processes (start-up included)")
    rows = [
        (f"floor: PIL decode + q40 encode + write, a pool of {w} processes (first, last)", fl,
         f"{ms['floor0']:.1f}, {ms['floor1']:.1f}"),
        ("facesift --stages compress", ms["compress"], ""),
        ("  + crop", ms["+crop"], ""),
        ("  + ocr", ms["+ocr"], ""),
        ("  + quality, dedup, split (the whole pass)", ms["whole"], ""),
        ("facesift --stages crop", ms["crop"], ""),
        (f"facesift --stages {SECOND} on the compressed outputs", ms["second"], ""),
        ("the whole pass with 1 worker", ms["whole1"], ""),
        (f"seed-style: cv2 I/O q40, Haar on the full image, tesseract on the face, 1 process ({seed_n} photos)", ms["seed"], ""),
    ]
    keys = ["floor0", "compress", "+crop", "+ocr", "whole", "crop", "second", "whole1", "seed"]
    print(f"{'contender':<100} {'ms/image':>9} {'x floor':>8} {'CPU ms/image':>13} {'x floor':>8}")
    for (name, v, extra), k in zip(rows, keys, strict=True):
        c = cfl if k == "floor0" else cms[k]
        print(f"{name:<100} {v:>9.1f} {v / fl:>7.2f}x {c:>13.1f} {c / cfl:>7.2f}x" + (f"  ({extra})" if extra else ""))
    print("CPU ms: user + system time of the process and its workers (less sensitive than wall to other jobs on the machine)")
    print(f"whole pass / floor:               {ms['whole'] / fl:.2f}x  (target <= 1.5; CPU time {cms['whole'] / cfl:.2f}x)")
    print(f"seed-style / whole pass:          {ms['seed'] / ms['whole']:.1f}x faster  (target >= 25)")
    print(f"second pass on compressed / floor: {ms['second'] / fl:.2f}x  (target <= 1.0; CPU time {cms['second'] / cfl:.2f}x)")
    print(f"whole pass, 1 -> {w} workers:       {ms['whole1'] / ms['whole']:.2f}x  (target >= 1.8)")
    if args.no_profile:
        return 0
    prof = read_profile(tmp / "w_whole")
    print(f"profile of the whole pass ({w} workers; ms per image per worker, summed over shards):")
    print("  " + ", ".join(f"{r['step']} {float(r['ms_per_image']):.1f}" for r in prof))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
