"""The ``predict`` subcommand.

``python -m pipeline predict --model WORK/model INPUT...`` finds faces in photos, folders, video
files or a camera with the crop stage's detector backends, chooses among them with the crop stage's
rules (``stages.crop.choose``: every face, biggest first), cuts them the way the crop stage did for
the run that trained the model (its WORK/run.toml), and writes one CSV row (or JSON object) per
face with the label and every class probability.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.options import verbosity
from pipeline.sources.tree import IMAGE_SUFFIXES
from stages.base import ConfigError, Item, quiet_native_stderr
from stages.crop import DEFAULT_DETECTOR, CropParams, choose, cut_face
from stages.detectors import DETECTORS, Face, create
from stages.images import Decoded, DecodeError, atomic_write, model_input, shrink, to_rgb
from stages.train.fit import predict_arrays
from stages.train.runtime import import_keras

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="faces + expression label + probabilities for photos, folders, videos, a camera",
                       description="Detect faces with the crop stage's backends and classify them with a trained model.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photo, folder (searched recursively), video file, or camera index (0, 1, ...)")
    p.add_argument("--model", "-m", type=Path, required=True,
                   help="trained model: WORK/model (model.keras + labels.json) or a .keras file beside labels.json")
    p.add_argument("--detector", help=f"face detector backend: {', '.join(sorted(DETECTORS))} (default: the training run's "
                                      "crop detector, else the crop stage's default); 'none': the whole image is the face (already-cropped faces)")
    p.add_argument("--format", "-f", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    p.add_argument("--out", "-o", type=Path, help="write the results to this file (default: standard output)")
    p.add_argument("--annotate", type=Path, metavar="DIR",
                   help="write copies of the images (and videos, as .mp4) with boxes and labels drawn into DIR")
    p.add_argument("--every", type=int, default=5, help="videos and cameras: classify every Nth frame (default: 5)")
    p.add_argument("--max-frames", type=int, default=0,
                   help="read at most this many frames of a video or camera (0: the whole video; a camera until Ctrl-C)")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces smaller than this many pixels (default: 0)")
    verbosity(p)
    p.set_defaults(func=cmd_predict)


def crop_settings(model_dir: Path, detector: str | None) -> Any:
    """CropParams as in the run that trained the model (its WORK/run.toml), with *detector* if given."""
    import tomllib


    table: dict[str, Any] = {}
    run_toml = model_dir.parent / "run.toml"
    if run_toml.is_file():
        try:
            conf = tomllib.loads(run_toml.read_text(encoding="utf-8"))
            if "crop" in conf.get("run", {}).get("stages", []):
                table = dict(conf.get("crop", {}))
                log.info("predict: cutting faces as the training run did (%s: margin %s, square %s)",
                         run_toml, table.get("margin"), table.get("square"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            log.warning("predict: ignoring %s (%s)", run_toml, e)
    keep = {"detector", "margin", "square", "align", "edge", "detect_side"}
    values = {k: v for k, v in table.items() if k in keep}
    if detector and detector != "none":
        values["detector"] = detector
    values.setdefault("detector", DEFAULT_DETECTOR)
    try:
        return CropParams(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"predict: {e}") from None


def expand(inputs: list[str]) -> list[tuple[str, Any]]:
    """(kind, what) per input: ("image"|"video", Path) for files, ("camera", int); folders expanded."""

    out: list[tuple[str, Any]] = []
    for raw in inputs:
        p = Path(raw)
        if raw.isdigit() and not p.exists():
            out.append(("camera", int(raw)))
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            out += [("video" if f.suffix.lower() in VIDEO_SUFFIXES else "image", f) for f in files
                    if f.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES]
        elif p.is_file():
            out.append(("video" if p.suffix.lower() in VIDEO_SUFFIXES else "image", p))
        else:
            raise ConfigError(f"predict: no such file, folder or camera: {raw}")
    return out


class Predictor:
    """A model, its labels, a face detector and the crop settings; classifies the faces of a frame."""

    def __init__(self, model_dir: Path, detector: str | None, min_face: int) -> None:
        model_file = model_dir if model_dir.suffix == ".keras" else model_dir / "model.keras"
        labels_file = model_file.with_name("labels.json")
        if not model_file.is_file() or not labels_file.is_file():
            raise ConfigError(f"predict: {model_file} and labels.json not found; train first (python -m pipeline train WORK)")
        keras = import_keras()
        with quiet_native_stderr():
            self.model = keras.models.load_model(model_file, compile=False)
        self.labels: list[str] = json.loads(labels_file.read_text(encoding="utf-8"))
        self.flip, self.shift = scoring_views(model_file.with_name("metrics.json"))
        h, w, c = (int(v) for v in self.model.input_shape[1:])
        self.shape = (h, w, c)
        self.crop = crop_settings(model_file.parent, detector)
        self.whole = detector == "none"
        #: crop's choice, keeping every face of at least *min_face* px whatever its score
        self.choice = dataclasses.replace(self.crop, policy="all", min_face=min_face, min_face_frac=0.0, min_score=0.0)
        if not self.whole:
            self.detector: Any = create(self.crop.detector)

    def faces(self, rgb: Any, name: str) -> list[Face]:
        """Faces in full-resolution pixels of *rgb*, biggest first: detected on a copy reduced as the
        crop stage reduces it, chosen by the crop stage's rules (every face at least --min-face px)."""
        h, w = rgb.shape[:2]
        if self.whole:
            return [Face((0.0, 0.0, float(w), float(h)), 1.0)]
        side = self.crop.detect_side or self.detector.side
        small = to_rgb(shrink(rgb, side)) if side else rgb
        sx, sy = w / small.shape[1], h / small.shape[0]
        item = Item(name, name, name)
        looked = self.detector.detect_closer(small, item, lambda: rgb) if sx > 1 else self.detector.detect(small, item)
        found = [f.scaled(sx, sy) for f in looked]
        chosen = choose(found, (w, h), self.choice)
        return chosen if isinstance(chosen, list) else []

    def classify(self, rgb: Any, name: str) -> list[dict[str, Any]]:
        """One dict per face: box (x, y, w, h), score, label, probability, probabilities."""
        faces = self.faces(rgb, name)
        if not faces:
            return []
        batch = [model_input(rgb if self.whole else cut_face(rgb, f, self.crop)[0], self.shape) for f in faces]
        probs = predict_arrays(self.model, np.stack(batch), flip=self.flip, shift=self.shift)
        out = []
        for f, p in zip(faces, probs, strict=True):
            i = int(p.argmax())
            out.append({"box": [round(v) for v in f.box], "score": round(float(f.score), 4), "label": self.labels[i],
                        "probability": round(float(p[i]), 4),
                        "probabilities": {lab: round(float(v), 4) for lab, v in zip(self.labels, p, strict=True)}})
        return out


def scoring_views(metrics: Path) -> tuple[bool, int]:
    """The test-time views the model was scored with (its metrics.json says: the mirror image, shifted
    copies); predict averages over the same, so its probabilities are the ones the reported accuracy
    measured. (False, 0) when metrics.json is missing or unreadable."""
    try:
        params = json.loads(metrics.read_text(encoding="utf-8")).get("params", {})
        return bool(params.get("test_flip", False)), max(0, int(params.get("test_shift", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return False, 0


def open_capture(what: int | str) -> Any:
    """cv2.VideoCapture without OpenCV's multi-line warnings when there is no such camera or file."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(what)
    finally:
        cv2.utils.logging.setLogLevel(level)


def frames(kind: str, what: Any, every: int, max_frames: int) -> Iterator[tuple[int | None, Any, bool, float]]:
    """(frame index or None, RGB pixels, classify this one?, fps) for an image, a video or a camera."""
    import cv2


    if kind == "image":
        yield None, to_rgb(Decoded(Path(what).read_bytes).full()), True, 0.0
        return
    cap = open_capture(what if kind == "camera" else str(what))
    if not cap.isOpened():
        raise ConfigError(f"predict: no camera at index {what}" if kind == "camera" else f"predict: cannot open video {what}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        n = 0
        while not max_frames or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield n, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), n % every == 0, fps
            n += 1
    finally:
        cap.release()


def draw(rgb: Any, faces: list[dict[str, Any]]) -> Any:
    """A BGR copy of *rgb* with each face's box and 'label NN%' drawn."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    t = max(1, round(max(bgr.shape[:2]) / 400))
    for f in faces:
        x, y, w, h = f["box"]
        cv2.rectangle(bgr, (x, y), (x + w, y + h), (0, 200, 0), t)
        text = f"{f['label']} {f['probability']:.0%}"
        scale = 0.5 * t
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, t)
        ty = y - base - 2 if y - th - base - 2 > 0 else y + h + th + 2
        cv2.rectangle(bgr, (x, ty - th - 2), (x + tw + 2, ty + base), (0, 200, 0), -1)
        cv2.putText(bgr, text, (x + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), t, cv2.LINE_AA)
    return bgr


class Writer:
    """CSV rows (one per face; for a frame without faces one row whose ``status`` says ``no_face``, or
    ``error`` with the reason in ``error``) or a JSON array, streamed."""

    def __init__(self, fmt: str, labels: list[str], stream: Any) -> None:
        import csv

        self.fmt, self.labels, self.stream, self.first = fmt, labels, stream, True
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            self.csv.writerow(["input", "frame", "status", "face", "x", "y", "w", "h", "det_score", "label", "probability",
                               *(f"p_{lab}" for lab in labels), "error"])
        else:
            stream.write("[")

    def add(self, source: str, frame: int | None, faces: list[dict[str, Any]], error: str = "") -> None:
        fr = "" if frame is None else frame
        if self.fmt == "json":
            obj = {"input": source, "frame": frame, "faces": faces} | ({"error": error} if error else {})
            self.stream.write(("\n" if self.first else ",\n") + json.dumps(obj, ensure_ascii=False))
            faces = []
        elif not faces:
            self.csv.writerow([source, fr, "error" if error else "no_face", "", "", "", "", "", "", "", "", *([""] * len(self.labels)), error])
        for i, f in enumerate(faces):
            self.csv.writerow([source, fr, "face", i, *f["box"], f["score"], f["label"], f["probability"],
                               *(f["probabilities"][lab] for lab in self.labels), ""])
        self.first = False
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n")
        self.stream.flush()


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2


    if args.every < 1 or args.max_frames < 0 or args.min_face < 0:
        raise ConfigError("predict: --every must be >= 1, --max-frames and --min-face >= 0")
    if args.detector and args.detector != "none" and args.detector not in DETECTORS:
        raise ConfigError(f"predict: unknown detector {args.detector!r}; available: none, {', '.join(sorted(DETECTORS))}")
    todo = expand(args.inputs)
    for kind, what in todo:  # before loading anything: a missing camera is a usage error
        if kind == "camera":
            cap = open_capture(what)
            ok = cap.isOpened()
            cap.release()
            if not ok:
                raise ConfigError(f"predict: no camera at index {what} (cv2.VideoCapture({what}) could not open it)")
    pred = Predictor(args.model, args.detector, args.min_face)
    stream = args.out.open("w", encoding="utf-8", newline="") if args.out else sys.stdout
    out = Writer(args.format, pred.labels, stream)
    n_faces = n_frames = 0
    try:
        for kind, what in todo:
            source = f"camera:{what}" if kind == "camera" else str(what)
            video = None
            faces: list[dict[str, Any]] = []
            try:
                for frame, rgb, classify, fps in frames(kind, what, args.every, args.max_frames):
                    if classify:
                        faces = pred.classify(rgb, source)
                        out.add(source, frame, faces)
                        n_faces += len(faces)
                        n_frames += 1
                    if args.annotate and kind == "image":
                        atomic_write(args.annotate / f"{Path(what).stem}.jpg", cv2.imencode(".jpg", draw(rgb, faces))[1].tobytes())
                    elif args.annotate:
                        if video is None:
                            args.annotate.mkdir(parents=True, exist_ok=True)
                            name = f"camera{what}.mp4" if kind == "camera" else f"{Path(what).stem}.mp4"
                            video = cv2.VideoWriter(str(args.annotate / name), cv2.VideoWriter_fourcc(*"mp4v"),
                                                    fps or 15.0, (rgb.shape[1], rgb.shape[0]))
                        video.write(draw(rgb, faces))  # between classified frames: the last result
            except DecodeError as e:
                out.add(source, None, [], f"{e.reason}: {e.detail}")
            except OSError as e:
                out.add(source, None, [], f"unreadable: {e}")
            finally:
                if video is not None:
                    video.release()
    finally:
        out.close()
        if args.out:
            stream.close()
    log.info("predict: %d face(s) in %d image(s)/frame(s)%s", n_faces, n_frames,
             f"; annotated copies in {args.annotate}" if args.annotate else "")
    return 0
