"""Training and inference speed of each model on this machine's CPU, at the model's own input size.

    python -m bench.train [--models fer-small,fer-cnn,mobilenetv3] [--precision float32,mixed_bfloat16]
                          [--batch 64] [--seconds 20] [--threads 0]

Per model: training images/s through ``model.fit`` (augmentation on, as the recipe trains),
inference images/s in batches (``--batch``) and one face at a time (as ``predict`` does per frame),
and the ratio of each figure to the first model's, measured in the same run. With several
``--precision`` policies each model trains under each (the train stage's ``--train-precision``);
inference is measured in float32 only, since the saved model is always float32. Also the input
pipeline alone (read + decode + resize of 48x48 JPEG files, first, uncached epoch) for scale.
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

import numpy as np


def rate(step: Callable[[], int], seconds: float, warmup: int = 2) -> float:
    """Images per second of repeated *step* calls (each returns the images it handled)."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += step()
    return n / (time.perf_counter() - t0)


def bench_model(name: str, batch: int, seconds: float, precision: str = "float32") -> dict[str, float]:
    import keras
    import tensorflow as tf

    from stages import models

    keras.mixed_precision.set_global_policy(precision)
    shape = models.input_shape(name)
    model = models.build(name, 7, augment=True, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * 4, *shape)).astype(np.float32)
    y = rng.integers(0, 7, batch * 4).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(2)
    steps = 4

    def train_step() -> int:
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        return steps * batch

    train = rate(train_step, seconds, warmup=1)
    keras.mixed_precision.set_global_policy("float32")
    if precision != "float32":
        return {"params": model.count_params(), "shape": shape, "train": train}
    infer_fn = tf.function(lambda t: model(t, training=False))
    xb = tf.constant(x[:batch])
    x1 = tf.constant(x[:1])
    infer = rate(lambda: (infer_fn(xb).numpy(), batch)[1], seconds / 2)
    single = rate(lambda: (infer_fn(x1).numpy(), 1)[1], seconds / 2)
    return {"params": model.count_params(), "shape": shape, "train": train, "infer": infer, "single": single}


def bench_input(seconds: float) -> float:
    """Input pipeline images/s: 48x48 JPEG files read, decoded, resized (no cache reuse)."""
    from PIL import Image

    from pipeline.train_data import Sample, dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for i in range(2048):
            p = Path(tmp, f"{i:04d}.jpg")
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(p, quality=90)
            items.append(Sample(str(i), "a", "train", str(p)))
        t0 = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _ in dataset(items, ["a"], (48, 48, 1), batch=64, shuffle=True, seed=0))
        return n / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="fer-small,fer-cnn,mobilenetv3", help="comma-separated model names; the first is the baseline")
    ap.add_argument("--precision", default="float32", help="comma-separated Keras policies to train under "
                    "(float32, mixed_bfloat16, mixed_float16)")
    ap.add_argument("--batch", type=int, default=64, help="batch size for training and batched inference (default: 64)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time spent measuring each training figure (default: 20)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads per op pool (0: the environment / all cores)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    keras.utils.set_random_seed(0)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    print(f"CPU: {os.cpu_count()} cores, TensorFlow {tf.__version__}, Keras {keras.__version__}, batch {args.batch}", flush=True)
    print(f"input pipeline (48x48 JPEG files -> tf.data, first epoch): {bench_input(args.seconds):,.0f} img/s", flush=True)
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
