"""The train stage on a machine without TensorFlow: Keras's JAX (or PyTorch) backend, on a GPU.

A GPU machine often has JAX or PyTorch but no TensorFlow and no copy of the data. So:

1. here, after ``python -m pipeline run --input ../shared/data/fer2013/train.zip --out W --stages
   quality,dedup,split``, pack what the split stage kept (48x48 faces decoded by the train stage's own
   input path, labels, splits) into one file:

       python -m bench.train_gpu pack --work W --out .gpu/fer.npz

2. there (with the keras wheel installed; no TensorFlow needed), train with the train stage's own
   code (``stages.train.fit.train``: the same models, schedule, resume points and metrics.json):

       KERAS_BACKEND=jax python -m bench.train_gpu train --data .gpu/fer.npz --work /tmp/W \\
           --set model=fer-vgg-wide --set epochs=80 --set precision=mixed_bfloat16

It prints the wall time of the training (decode, fit, evaluation) and the run's own test accuracy;
WORK/model/ holds the usual artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def pack(work: Path, out: Path, side: int = 48) -> None:
    from stages.train import TrainParams
    from stages.train import fit as training
    from stages.train.data import decode, samples

    records = training.records_from_manifest(work)
    items, origin = samples(records, work, TrainParams().seed)
    x = np.stack([decode(s, (side, side, 1)) for s in items])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x=x, key=np.array([s.key for s in items]), label=np.array([s.label for s in items]),
                        split=np.array([s.split for s in items]))
    print(f"packed {len(items)} images ({origin}) into {out} ({out.stat().st_size / 1e6:.1f} MB)")


def unpack(data: Path, work: Path) -> list[dict[str, object]]:
    """The packed faces as PNG files in WORK/images/faces/ and records as the runner hands them to train."""
    import cv2

    z = np.load(data)
    x = z["x"]  # once: every access to an npz member decompresses it anew
    folder = work / "images" / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (key, label, split) in enumerate(zip(z["key"].tolist(), z["label"].tolist(), z["split"].tolist(), strict=True)):
        rel = f"images/faces/{i:06d}.png"
        if not (work / rel).is_file():
            cv2.imwrite(str(work / rel), x[i])
        records.append({"key": key, "file": rel, "label": label, "group": "", "meta": {}, "metrics": {"split": split},
                        "status": "kept"})
    return records


def train(data: Path, work: Path, settings: list[str]) -> None:
    from pipeline.config import stage_params
    from stages.train import fit as training

    table = {}
    for s in settings:
        k, sep, v = s.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE, got {s!r}")
        table[k.strip()] = v.strip()
    params = stage_params("train", table)
    records = unpack(data, work)
    t0 = time.monotonic()
    result = training.train(records, work, params)
    wall = time.monotonic() - t0
    m = result.metrics
    line = {"backend": m.get("backend"), "model": m["model"], "params": table, "wall_s": round(wall, 1),
            "test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], "val_accuracy": m.get("val", {}).get("accuracy"),
            "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"]}
    print(json.dumps(line), flush=True)


def main() -> None:
    import logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a workspace's kept faces, labels and splits into one .npz")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train from a packed .npz with the train stage's code")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a train parameter (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.cmd == "pack":
        pack(args.work, args.out)
    else:
        train(args.data, args.work, args.set)


if __name__ == "__main__":
    main()
