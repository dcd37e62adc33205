"""Training the expression CNN: records in, WORK/model/ out; resumable after a kill.

Used by the ``train`` stage (records from the earlier stages) and by ``python -m pipeline train
WORK`` (records from WORK/manifest.csv). Keras and the callbacks (which import it) are loaded when
training starts, not when the stage registers. WORK/model/ gets:

    model.keras     the best epoch's model (by val accuracy), raw pixels in, probabilities out
    labels.json     class names in output order
    history.csv     per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate
    curves.png      loss and accuracy, train vs val
    confusion.png   confusion matrix on the test split (val when there is none)
    metrics.json    accuracy, macro-F1, per-class precision/recall/F1, counts, the inputs' detail (deterministic: no timings)
    predictions.csv the evaluated split: key, label, predicted, probability
    backup/         resume point while training runs (removed when done)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stages import models
from stages.base import ConfigError, quiet_native_stderr
from stages.images import atomic_write
from stages.train import data as train_data
from stages.train import evaluate as train_eval
from stages.train import runtime
from stages.train.params import BATCH, TrainParams

log = logging.getLogger(__name__)
FORMAT_VERSION = 3


@dataclass
class TrainResult:
    """What a training run decided: the split of every trained key, and metrics.json's content."""

    splits: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    model_dir: Path = Path()


def records_from_manifest(work: Path) -> list[dict[str, Any]]:
    """Records as the runner would hand them to the train stage, from WORK/manifest.csv."""
    path = work / "manifest.csv"
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the pipeline into {work} first (python -m pipeline run --out {work} ...)")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"key", "file", "label"} <= set(rows[0]):
        raise ConfigError(f"{path} lacks key/file/label columns")
    return [{"key": r["key"], "source": r.get("source", ""), "file": r["file"], "label": r["label"], "group": r.get("group", ""),
             "meta": {}, "metrics": {"split": r.get("split", "")}, "status": "kept"} for r in rows]


#: Parameters that never change what an epoch computes: a resume point stays valid across them
#: (raising ``epochs`` continues an interrupted run with a bigger budget).
NOT_FINGERPRINTED = ("threads", "epochs", "test_flip", "test_shift")


def _fingerprint(params: TrainParams, labels: list[str], samples: list[train_data.Sample]) -> str:
    # The cosine schedule spans the epoch budget, so there the budget changes every epoch's learning rate.
    keep = ("epochs",) if params.schedule == "cosine" else ()
    p = {k: v for k, v in asdict(params).items() if k not in NOT_FINGERPRINTED or k in keep}
    if p["precision"] == "float32":
        del p["precision"]  # as before the option existed: a float32 run's resume point outlives the upgrade
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, p, labels], sort_keys=True).encode())
    for s in samples:
        h.update(f"{s.key}\0{s.label}\0{s.split}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Plan:
    """What to train on: samples by split, the labels (class order) and where the split came from."""

    samples: list[train_data.Sample]
    labels: list[str]
    by_split: dict[str, list[train_data.Sample]]
    origin: str

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {sp: dict(sorted(Counter(s.label for s in items).items())) for sp, items in self.by_split.items()}


def plan(records: list[dict[str, Any]], work: Path, params: TrainParams) -> Plan:
    """Labelled records -> samples with splits (subset and fallback split applied); ConfigError if untrainable."""
    labelled = [r for r in records if r.get("label")]
    chosen = train_data.subset(labelled, params.max_items, params.seed)
    if len(chosen) < len(labelled):
        log.info("train: using a stratified subset of %d of %d labelled images (train.max_items)", len(chosen), len(labelled))
    samples, origin = train_data.samples(chosen, work, params.seed)
    labels = sorted({s.label for s in samples})
    by_split = {sp: [s for s in samples if s.split == sp] for sp in train_data.SPLITS}
    if len(labels) < 2:
        raise ConfigError(f"train: need at least 2 labels to train, got {labels or 'none'}")
    if not by_split["train"] or not by_split["val"]:
        raise ConfigError(f"train: need train and val images, got {len(by_split['train'])} train, {len(by_split['val'])} val")
    log.info("train: %s on %s images (%s); labels: %s", params.model,
             "/".join(f"{len(by_split[sp])} {sp}" for sp in train_data.SPLITS), origin, ", ".join(labels))
    return Plan(samples, labels, by_split, origin)


def train(records: list[dict[str, Any]], work: Path, params: TrainParams) -> TrainResult:
    """Train ``params.model`` on *records*, write WORK/model/, return the splits and metrics."""
    keras = runtime.import_keras()
    from stages.train import callbacks as cb

    p = plan(records, work, params)
    n_train = len(p.by_split["train"])
    sized = params.sized(n_train)
    if not params.batch_size and sized.batch_size < BATCH:
        log.info("train: %d training images: batches of %d (learning rate %.2g) for %d steps an epoch", n_train,
                 sized.batch_size, sized.learning_rate, -(-n_train // sized.batch_size))
    params = replace(sized, precision=runtime.resolve_precision(keras, params.precision))
    backup = work / "model" / "backup"
    fp = _fingerprint(params, p.labels, p.samples)
    state = cb.load_state(backup)
    if state is not None and state.get("fingerprint") != fp:
        log.warning("train: the resume point in %s is for other data or parameters; starting over", backup)
        state = None
    if state is None and backup.exists():
        shutil.rmtree(backup)
    backup.mkdir(parents=True, exist_ok=True)
    was_on, policy = runtime.determinism_on(), keras.mixed_precision.global_policy().name
    runtime.configure(keras, params.threads, params.seed + (state["epoch"] if state else 0))
    keras.mixed_precision.set_global_policy(params.precision)
    try:
        return _fit_and_report(keras, params, p, backup, fp, state)
    finally:
        # Process-wide settings: other TensorFlow code in this process (a face detector) must not inherit them.
        runtime.reset_determinism(was_on)
        keras.mixed_precision.set_global_policy(policy)


def arrays(p: Plan, shape: tuple[int, int, int], cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (uint8 images at *shape*, class indices), decoded once into *cache* (stale files removed)."""
    index = {name: i for i, name in enumerate(p.labels)}
    out, used = {}, set()
    for sp, items in p.by_split.items():
        if not items:
            continue
        x = train_data.load(items, shape, cache, desc=f"decoding {sp}")
        used.add(f"{train_data.cache_key(items, shape)}.npy")
        out[sp] = (x, np.array([index[s.label] for s in items], np.int64))
    for old in cache.glob("*.npy"):
        if old.name not in used:
            old.unlink(missing_ok=True)
    return out


def _fit_and_report(keras: Any, params: TrainParams, p: Plan, backup: Path, fp: str, state: dict[str, Any] | None) -> TrainResult:
    from stages.train import callbacks as cb

    out, labels = backup.parent, p.labels
    start = state["epoch"] if state else 0
    shape = models.input_shape(params.model, params.image_size)
    data = arrays(p, shape, out / "cache")
    xt, yt = data["train"]
    steps = -(-len(yt) // params.batch_size)
    if state:
        log.info("train: resuming after epoch %d of %d from %s", start, params.epochs, backup)
        if start >= params.epochs:
            log.warning("train: the resume point is past --train-epochs %d; evaluating it as it is", params.epochs)
        model = keras.models.load_model(backup / "last.keras")
    else:
        model = models.build(params.model, len(labels), image_size=params.image_size, weights=params.weights,
                             seed=params.seed)
        models.compile_for(model, params, steps)
    weights = train_data.class_weights(Counter(yt.tolist()), len(labels), params.class_weights)

    detail = train_data.input_detail(p.by_split["train"], params.seed)  # warns about enlarged images
    early = keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=params.patience,
                                          restore_best_weights=True) if params.patience else None
    plateau = keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=params.lr_patience,
                                                min_lr=params.learning_rate / 64) if params.schedule == "plateau" and params.lr_patience else None
    best = keras.callbacks.ModelCheckpoint(str(backup / "best-{epoch:03d}.keras"), monitor="val_accuracy", mode="max",
                                           save_best_only=True)
    resume = cb.Resume(backup, out, fp, state, early, plateau, best)
    callbacks = [c for c in (early, plateau, best) if c is not None] + [resume, cb.EpochLog(params.epochs, start)]
    if not (resume.state.get("stopped") or start >= params.epochs):
        train_batches = train_data.batches(xt, yt, len(labels), batch=params.batch_size, shuffle=True, seed=params.seed,
                                           first_epoch=start, weights=weights, augmented=params.augment,
                                           erasing=params.erase if params.augment else 0.0, endless=True)
        val_batches = train_data.batches(*data["val"], len(labels), batch=max(params.batch_size, 256), shuffle=False, seed=0)
        train_batches, val_batches = (train_data.fit_input(f, shape, len(labels)) for f in (train_batches, val_batches))
        with quiet_native_stderr():
            # The feeder shuffles (per epoch, from the seed); Keras' own shuffle does not apply to an endless one.
            model.fit(train_batches, steps_per_epoch=steps, shuffle=False, validation_data=val_batches, epochs=params.epochs,
                      initial_epoch=start, callbacks=callbacks, verbose=0)
    st = resume.state
    if st["best_file"] and (backup / st["best_file"]).is_file():
        model = keras.models.load_model(backup / st["best_file"], compile=False)
    model = float32_copy(model, keras)  # what is scored is what is saved, whatever the training precision
    best_epoch = int(st["best_file"][5:8]) if st["best_file"] else st["epoch"]

    metrics = evaluate(model, p.by_split, data, labels, params, out)
    metrics.update({
        "model": params.model, "input_shape": list(shape), "input_detail_px": detail[0] if detail else None,
        "input_side_px": detail[1] if detail else None,
        "labels": labels, "split_from": p.origin, "counts": p.counts,
        "class_weights": {labels[i]: w for i, w in weights.items()} if weights else None,
        "epochs_run": st["epoch"], "best_epoch": best_epoch, "stopped_early": bool(st.get("stopped")),
        "backend": keras.backend.backend(),
        "params": {k: v for k, v in asdict(params).items() if k != "threads"},
    })
    write_artifacts(model, keras, out, labels, st["history"], metrics)
    shutil.rmtree(backup, ignore_errors=True)
    log.info("train: %s accuracy %.4f, macro-F1 %.4f (best epoch %d of %d run); artifacts in %s",
             metrics["evaluated_on"], metrics["accuracy"], metrics["macro_f1"], best_epoch, st["epoch"], out)
    return TrainResult({s.key: s.split for s in p.samples}, metrics, out)


def predict_arrays(model: Any, x: np.ndarray, batch: int = 512, *, flip: bool = False, shift: int = 0) -> np.ndarray:
    """Class probabilities for uint8 images *x* (N, H, W, C), in order: the mean over each image's
    views. With *shift*, the image and four copies moved *shift* px left, right, up and down (borders
    reflected, as the training augmentation fills them); with *flip*, each of those and its mirror image."""
    n = len(x)
    if not n:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)

    def probs(b: np.ndarray) -> np.ndarray:
        # Keras's compiled predict step: the same outputs as calling the model eagerly, 1.5x the rate
        # of fer-vgg on TensorFlow on a 2-core CPU (batches of 510 views; BENCHMARKS.md, train).
        return np.asarray(model.predict_on_batch(b), np.float32)

    k = (1 + 4 * (shift > 0)) * (1 + flip)  # views per image
    step = max(1, batch // k)  # every view of a chunk in one call (one face: one call, not k)
    parts = []
    for i in range(0, n, step):
        p = probs(np.concatenate(view_batches(np.asarray(x[i:i + step], np.float32), flip=flip, shift=shift)))
        parts.append(p.reshape(k, -1, p.shape[-1]).mean(axis=0))
    return np.concatenate(parts)


def view_batches(b: np.ndarray, *, flip: bool, shift: int) -> list[np.ndarray]:
    """The views of a batch (N, H, W, C) that ``predict_arrays`` averages over."""
    out = [b]
    if shift:
        h, w = b.shape[1:3]
        s = min(shift, h - 1, w - 1)
        pad = np.pad(b, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
        out += [pad[:, s + dy:s + dy + h, s + dx:s + dx + w] for dy, dx in ((0, -s), (0, s), (-s, 0), (s, 0))]
    return out + [v[:, :, ::-1] for v in out] if flip else out


def evaluate(model: Any, by_split: dict[str, list[train_data.Sample]], data: dict[str, tuple[np.ndarray, np.ndarray]],
             labels: list[str], params: TrainParams, out: Path) -> dict[str, Any]:
    """Scores on test (val when there is no test split), val scores, and predictions.csv."""
    split = "test" if by_split["test"] else "val"
    if split == "val":
        log.warning("train: no test split; the scores below are on val, which also chose the best epoch")
    items = by_split[split]
    x, y = data[split]
    p = predict_arrays(model, x, flip=params.test_flip, shift=params.test_shift)
    pred = p.argmax(axis=1)
    res: dict[str, Any] = {"evaluated_on": split}
    res.update(train_eval.scores(train_eval.confusion(y, pred, len(labels)), labels))
    res["loss"] = round(float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean()), 4) if len(y) else 0.0
    if split == "test":
        vx, vy = data["val"]
        vp = predict_arrays(model, vx, flip=params.test_flip, shift=params.test_shift)
        v = train_eval.scores(train_eval.confusion(vy, vp.argmax(axis=1), len(labels)), labels)
        res["val"] = {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"], "count": v["count"]}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "label", "predicted", "probability"])
    for s, t, q, pr in sorted(zip(items, y, pred, p.max(axis=1), strict=True), key=lambda t: t[0].key):
        w.writerow([s.key, labels[t], labels[q], f"{pr:.4f}"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "predictions.csv", buf.getvalue().encode())
    return res


def float32_copy(model: Any, keras: Any) -> Any:
    """An uncompiled float32 model with *model*'s weights: saved without optimizer state (3x smaller),
    and predicting at full precision on any machine whatever precision it was trained in."""
    def to_float32(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: to_float32(v) for k, v in node.items()}
        return [to_float32(v) for v in node] if isinstance(node, list) else node

    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        plain = keras.Model.from_config(to_float32(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    plain.set_weights(model.get_weights())
    return plain


def write_artifacts(model: Any, keras: Any, out: Path, labels: list[str], history: list[dict[str, Any]],
                    metrics: dict[str, Any]) -> None:
    """model.keras (*model*: a ``float32_copy``), labels.json, history.csv, curves.png, confusion.png, metrics.json."""
    from stages.train import callbacks as cb

    tmp = out / ".model-tmp.keras"
    model.save(tmp)
    os.replace(tmp, out / "model.keras")
    atomic_write(out / "labels.json", (json.dumps(labels, ensure_ascii=False) + "\n").encode())
    atomic_write(out / "history.csv", cb.history_csv(history))
    title = f"{metrics['model']}: {metrics['evaluated_on']} accuracy {metrics['accuracy']:.1%}, macro-F1 {metrics['macro_f1']:.3f}"
    atomic_write(out / "curves.png", train_eval.curves_png(history, f"{metrics['model']} training curves"))
    atomic_write(out / "confusion.png", train_eval.confusion_png(np.array(metrics["confusion"]), labels, title))
    atomic_write(out / "metrics.json", (json.dumps(metrics, indent=1, ensure_ascii=False) + "\n").encode())
