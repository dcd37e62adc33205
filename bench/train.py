"""Training and inference speed of each model on this machine, at the model's own input size.

    python -m bench.train [--models fer-vgg,fer-small,fer-cnn,fer-vgg-wide] [--precision float32,mixed_bfloat16]
                          [--batch 128] [--seconds 20] [--threads 0]

Runs on whatever Keras backend is configured (``KERAS_BACKEND``; TensorFlow by default).
Per model: training images/s through ``model.fit`` on the train stage's own input (the
``train_data.batches`` feeder with its augmentation, the recipe's optimizer and loss),
inference images/s in batches (``--batch``) and one face at a time (as ``predict`` does per frame),
and the ratio of each figure to the first model's, measured in the same run. With several
``--precision`` policies each model trains under each (the train stage's ``--train-precision``);
inference is measured in float32 only, since the saved model is always float32. Also the input
pipeline alone (read + decode + resize of 48x48 JPEG files into the training array) for scale.
Random pixels: speed does not depend on the content.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def rate(step: Callable[[], int], seconds: float, warmup: int = 2) -> float:
    """Images per second of repeated *step* calls (each returns the images it handled)."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += step()
    return n / (time.perf_counter() - t0)


def bench_model(name: str, batch: int, seconds: float, precision: str = "float32") -> dict[str, Any]:
    import keras

    from stages import models
    from stages.train import TrainParams
    from stages.train.data import batches, fit_input

    keras.mixed_precision.set_global_policy(precision)
    shape = models.input_shape(name)
    model = models.build(name, 7, seed=0)
    models.compile_for(model, TrainParams(model=name, batch_size=batch).sized(100 * batch), 100)
    rng = np.random.default_rng(0)
    steps = 4
    x = rng.integers(0, 256, (batch * steps, *shape), dtype=np.uint8)
    y = rng.integers(0, 7, batch * steps)
    feed = fit_input(batches(x, y, 7, batch=batch, shuffle=True, seed=0, augmented=True), shape, 7)  # as the stage feeds it

    def train_step() -> int:
        model.fit(feed, epochs=1, verbose=0, shuffle=False)  # the feeder shuffles
        return steps * batch

    train = rate(train_step, seconds, warmup=1)
    keras.mixed_precision.set_global_policy("float32")
    if precision != "float32":
        return {"params": model.count_params(), "shape": shape, "train": train}
    xb = x[:batch].astype(np.float32)
    x1 = x[:1].astype(np.float32)
    infer = rate(lambda: (model.predict_on_batch(xb), batch)[1], seconds / 2)  # as predict_arrays calls it
    single = rate(lambda: (model.predict_on_batch(x1), 1)[1], seconds / 2)
    return {"params": model.count_params(), "shape": shape, "train": train, "infer": infer, "single": single}


def bench_input() -> float:
    """Input pipeline images/s: 48x48 JPEG files read, decoded and resized into the training array."""
    from PIL import Image

    from stages.train.data import Sample, load

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for i in range(2048):
            p = Path(tmp, f"{i:04d}.jpg")
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(p, quality=90)
            items.append(Sample(str(i), "a", "train", str(p)))
        t0 = time.perf_counter()
        n = len(load(items, (48, 48, 1)))
        return n / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="fer-vgg,fer-small,fer-cnn,fer-vgg-wide", help="comma-separated model names; the first is the baseline")
    ap.add_argument("--precision", default="float32", help="comma-separated Keras policies to train under "
                    "(float32, mixed_bfloat16, mixed_float16)")
    ap.add_argument("--batch", type=int, default=128, help="batch size for training and batched inference (default: 128)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time spent measuring each training figure (default: 20)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads per op pool (0: the environment / all cores)")
    args = ap.parse_args(argv)
    from stages.train.runtime import configure, import_keras

    keras = import_keras()
    configure(keras, args.threads, 0)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    print(f"CPU: {os.cpu_count()} cores, Keras {keras.__version__} on {keras.backend.backend()}, batch {args.batch}", flush=True)
    print(f"input pipeline (48x48 JPEG files -> training array): {bench_input():,.0f} img/s", flush=True)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    rows = []
    for name in names:
        for precision in precisions:
            rows.append((name, precision, bench_model(name, args.batch, args.seconds, precision)))
            print(f"  measured {name} {precision}", file=sys.stderr, flush=True)
    base = rows[0][2]
    print(f"{'model':<12} {'precision':<15} {'input':>9} {'params':>9} {'train img/s':>12} {'infer img/s':>12} {'1-face img/s':>13}  "
          f"vs {rows[0][0]} {rows[0][1]} (train / infer)")
    for name, precision, r in rows:
        h, w, c = r["shape"]
        infer = (f"{r['infer']:>12,.0f} {r['single']:>13,.0f}", f" / {r['infer'] / base['infer']:.2f}x") if "infer" in r else (
            f"{'-':>12} {'-':>13}", "")
        print(f"{name:<12} {precision:<15} {f'{h}x{w}x{c}':>9} {r['params']:>9,} {r['train']:>12,.0f} {infer[0]}  "
              f"{r['train'] / base['train']:.2f}x{infer[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
