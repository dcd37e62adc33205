"""Throughput of the compress stage against two baselines measured in the same run.

    python -m bench.compress [--data DIR] [--n 320] [--workers 2]

Baselines over the same files: a plain sequential ``cv2.imread`` + ``cv2.imwrite`` quality-40 loop
(through ASCII-named links, since cv2.imread cannot open the Korean names), and a bare
one-process PIL decode + encode loop (the per-core floor of what any Python tool can do). facesift
runs in-process (``runner.run``: listing, sharding, loky workers, manifests, exports included).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SUFFIXES = {".jpg", ".jpeg", ".png"}


def cv2_loop(files: list[Path], out: Path) -> float:
    import cv2

    cv2.setNumThreads(1)
    links = out / "links"
    links.mkdir(parents=True)
    for i, f in enumerate(files):
        os.symlink(f, links / f"{i:06d}.jpg")
    t0 = time.perf_counter()
    for i in range(len(files)):
        img = cv2.imread(str(links / f"{i:06d}.jpg"))
        cv2.imwrite(str(out / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return time.perf_counter() - t0


def pil_loop(files: list[Path]) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            im.load()
            im.save(io.BytesIO(), "JPEG", quality=40)
    return time.perf_counter() - t0


def facesift(data: Path, work: Path, workers: int) -> float:
    import stages  # noqa: F401
    from pipeline import config, runner

    cfg = config.build({}, {"input": str(data), "out": str(work), "stages": "compress", "workers": str(workers),
                            "backend": "loky", "source.layout": "folder"})
    t0 = time.perf_counter()
    result = runner.run(cfg)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit("facesift run failed")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.compress", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="input folder (default: generate AIHub-like data into a temp folder)")
    p.add_argument("--n", type=int, default=320, help="images to generate when --data is not given")
    p.add_argument("--sizes", default="1920x1080,4000x3000", help="sizes to generate")
    p.add_argument("--workers", type=int, default=2, help="facesift workers")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="facesift-bench-"))
    try:
        data = args.data
        if data is None:
            from bench import generate

            data = tmp / "data"
            generate.main(["--out", str(data), "--n", str(args.n), "--sizes", args.sizes, "--seed", "7"])
        files = sorted(f for f in data.rglob("*") if f.suffix.lower() in SUFFIXES)
        size = sum(f.stat().st_size for f in files)
        for f in files:  # warm the page cache so no contender pays for cold reads
            f.read_bytes()
        t_cv2 = cv2_loop(files, tmp / "cv2")
        t_pil = pil_loop(files)
        t_fs = facesift(data, tmp / "work", args.workers)
        n = len(files)
        rate = {"cv2 imread+imwrite loop (1 process)": n / t_cv2, "PIL decode+encode loop (1 process)": n / t_pil,
                f"facesift compress ({args.workers} workers, loky)": n / t_fs}
        print(f"{n} images, {size / 1e6:.0f} MB ({args.sizes}), python {sys.version.split()[0]}, {os.cpu_count()} cores")
        print(f"{'contender':<40} {'seconds':>8} {'img/s':>7}")
        for (name, r), t in zip(rate.items(), (t_cv2, t_pil, t_fs), strict=True):
            print(f"{name:<40} {t:>8.2f} {r:>7.2f}")
        fs = n / t_fs
        print(f"ratio facesift / cv2 loop:                 {fs / rate['cv2 imread+imwrite loop (1 process)']:.2f}x  (target >= 1.7)")
        print(f"ratio facesift / (PIL floor x {args.workers} workers):   {fs / (args.workers * n / t_pil):.2f}x  (target >= 0.85)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
