"""Measurements behind the quality stage's default thresholds, and its per-image cost.

    python -m bench.quality [--shared ../shared/data]

Scores (stages.quality.scores, as the stage computes them) of: the 28,709 FER2013 train faces
(48x48 gray, scored whole: no crop); the 50 shared photos (faces/presence, faces/groups) reduced
to 256 px as the stage does without crop; the 64 faces cut from them (bench.dedup's boxes, 20%
margin) as the crop stage hands them on; and those cuts shrunk to 16 px and enlarged back (bilinear),
as upscaled thumbnails are, to show what ``detail_px`` reads on them. Printed: percentiles of every score per set, what the
default thresholds reject per set and reason, and the thresholds' margins to the real images.
Cost: ms per image of the per-item step against decoding alone (the baseline), same images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.base import Context, Item
from stages.images import Decoded, View
from stages.quality import CHECKS, Quality, QualityParams, scores

SCORES = ("sharpness", "bright_p5", "bright_p95", "brightness", "contrast", "entropy", "chroma", "face_px", "detail_px")
PCTS = (0.1, 1, 5, 50, 95, 99.9)


def fer(shared: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        return [(m, z.read(m)) for m in sorted(z.namelist()) if m.endswith(".jpg")]


def enlarged(images: list[tuple[str, bytes]], side: int = 16) -> list[tuple[str, bytes]]:
    """*images* shrunk to *side* px on the shorter side and enlarged back to their size (JPEG q95)."""
    import cv2

    out = []
    for k, data in images:
        a = Decoded.from_bytes(data).full()
        h, w = a.shape[:2]
        s = side / min(h, w)
        small = cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        _, buf = cv2.imencode(".jpg", cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append((k, buf.tobytes()))
    return out


def decide(metrics: list[dict[str, Any]], p: QualityParams) -> Counter[str]:
    """Reasons the stage's own dataset step gives on these scores."""
    records = [{"key": f"{k:06d}", "label": "", "metrics": m} for k, m in enumerate(metrics)]
    with tempfile.TemporaryDirectory() as tmp:
        return Counter(o.reason for o in Quality(p).run(records, Path(tmp)) if o.reason)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    from bench.dedup import units

    sets = {"fer2013 train": fer(args.shared), **{k: v for k, v in units(args.shared).items()}}
    sets["faces enlarged from 16 px"] = enlarged(sets["faces"])
    stage = Quality()
    p = QualityParams()
    print("defaults: " + ", ".join(f"{c.param}={getattr(p, c.param)}" for c in CHECKS))
    for name, images in sets.items():
        t0 = time.perf_counter()
        decoded = []
        for _, data in images:
            d = Decoded.from_bytes(data)
            d.at_most(256)
            decoded.append(d)
        t_decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        if name.startswith("faces"):  # handed on by crop: the cut itself is the view
            metrics = [dict(stage.process(Item(k, "", ""), d, Context(Path("."), View(d.full()))).metrics) for (k, _), d in zip(images, decoded, strict=True)]
        else:
            metrics = [dict(stage.process(Item(k, "", ""), d, Context(Path("."))).metrics) for (k, _), d in zip(images, decoded, strict=True)]
        t_score = time.perf_counter() - t0
        n = len(images)
        print(f"\n{name}: {n} images; decode {1e3 * t_decode / n:.2f} ms/image (baseline), quality scores "
              f"{1e3 * t_score / n:.2f} ms/image ({t_score / t_decode:.2f}x the decode)")
        print(f"  {'score':<11}" + "".join(f"{'p' + format(q, 'g'):>9}" for q in PCTS) + f"{'min':>9}{'max':>9}")
        for s in SCORES:
            v = np.array([m[s] for m in metrics], dtype=np.float64)
            print(f"  {s:<11}" + "".join(f"{x:>9.1f}" for x in np.percentile(v, PCTS)) + f"{v.min():>9.1f}{v.max():>9.1f}")
        rej = decide(metrics, p)
        print(f"  rejected with the defaults: {sum(rej.values())} ({100 * sum(rej.values()) / n:.2f}%): "
              + (", ".join(f"{k} {v}" for k, v in rej.most_common()) or "none"))
    # The score a synthetic bad image gets, for the margins.
    print("\nsynthetic: " + "; ".join(f"{name} {scores(a)}" for name, a in (
        ("black", np.zeros((96, 96), np.uint8)), ("white", np.full((96, 96), 255, np.uint8)), ("gray", np.full((96, 96), 128, np.uint8)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
