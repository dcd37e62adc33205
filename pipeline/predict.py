"""``train`` and ``predict`` subcommands.

``python -m pipeline train WORK`` trains from WORK/manifest.csv with the train stage's code and
parameters (``--epochs``, ``--model``, ...). ``python -m pipeline predict --model WORK/model INPUT...``
finds faces in photos, folders, video files or a camera with the crop stage's detector backends,
cuts them the way the crop stage did for the run that trained the model (its WORK/run.toml), and
writes one CSV row (or JSON object) per face with the label and every class probability.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.cli import verbosity

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


def add_parser(sub: Any) -> None:
    from pipeline.config import stage_fields

    t = sub.add_parser("train", help="train the expression CNN on WORK/manifest.csv (same code as the train stage)",
                       description="Train on the kept items of a workspace (WORK/manifest.csv: key, file, label, split); "
                                   "artifacts go to WORK/model/. Re-running after a kill resumes from the last epoch.")
    t.add_argument("work", type=Path, help="workspace folder given as --out to run")
    t.add_argument("--config", type=Path, help="TOML file whose [train] table sets parameters (flags win)")
    for f, typ in stage_fields("train"):
        flag = f"--{f.name.replace('_', '-')}"
        helptext = f"{f.metadata['help']} (default: {f.default!r})"
        if typ is bool:
            t.add_argument(flag, dest=f"train.{f.name}", action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            t.add_argument(flag, dest=f"train.{f.name}", metavar=f.name.upper(), choices=f.metadata.get("choices"),
                           default=None, help=helptext)
    verbosity(t)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="faces + expression label + probabilities for photos, folders, videos, a camera",
                       description="Detect faces with the crop stage's backends and classify them with a trained model.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photo, folder (searched recursively), video file, or camera index (0, 1, ...)")
    p.add_argument("--model", "-m", type=Path, required=True,
                   help="trained model: WORK/model (model.keras + labels.json) or a .keras file beside labels.json")
    from stages.detectors import DETECTORS

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


def train_params(args: argparse.Namespace) -> Any:
    """TrainParams from defaults < the --config file's [train] table < flags."""
    from pipeline.config import ConfigError, coerce, load_toml, stage_fields
    from stages.train import TrainParams

    table = load_toml(args.config).get("train", {}) if args.config else {}
    known = {f.name for f, _ in stage_fields("train")}
    if set(table) - known:
        raise ConfigError(f"config [train]: unknown key(s) {', '.join(sorted(set(table) - known))}")
    values = {}
    for f, typ in stage_fields("train"):
        v = getattr(args, f"train.{f.name}")
        v = v if v is not None else table.get(f.name)
        if v is not None:
            values[f.name] = coerce(v, typ, f"train.{f.name}")
    try:
        return TrainParams(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline import training

    params = train_params(args)
    records = training.records_from_manifest(args.work)
    result = training.train(records, args.work, params)
    m = result.metrics
    print(f"{m['model']}: {m['evaluated_on']} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
          f"on {m['count']} images (best epoch {m['best_epoch']} of {m['epochs_run']}); model in {result.model_dir}")
    return 0


# ---------------------------------------------------------------- predict


def crop_settings(model_dir: Path, detector: str | None) -> Any:
    """CropParams as in the run that trained the model (its WORK/run.toml), with *detector* if given."""
    import tomllib

    from pipeline.config import ConfigError
    from stages.crop import DEFAULT_DETECTOR, CropParams

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
    from pipeline.config import ConfigError
    from pipeline.sources.tree import IMAGE_SUFFIXES

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
        from pipeline.config import ConfigError
        from pipeline.training import import_keras, quiet_native_stderr

        model_file = model_dir if model_dir.suffix == ".keras" else model_dir / "model.keras"
        labels_file = model_file.with_name("labels.json")
        if not model_file.is_file() or not labels_file.is_file():
            raise ConfigError(f"predict: {model_file} and labels.json not found; train first (python -m pipeline train WORK)")
        keras = import_keras()
        with quiet_native_stderr():
            self.model = keras.models.load_model(model_file, compile=False)
        self.labels: list[str] = json.loads(labels_file.read_text(encoding="utf-8"))
        self.flip = test_flip(model_file.with_name("metrics.json"))
        self.shape = tuple(int(v) for v in self.model.input_shape[1:])
        self.crop = crop_settings(model_file.parent, detector)
        self.whole = detector == "none"
        self.min_face = min_face
        if not self.whole:
            from stages.detectors import create

            self.detector = create(self.crop.detector)

    def faces(self, rgb: Any, name: str) -> list[Any]:
        """Faces in full-resolution pixels of *rgb*, biggest first."""
        import cv2

        from stages.base import Item
        from stages.detectors import Face

        h, w = rgb.shape[:2]
        if self.whole:
            return [Face((0.0, 0.0, float(w), float(h)), 1.0)]
        side = self.crop.detect_side or self.detector.side
        small = rgb
        if side and max(h, w) > side:
            k = side / max(h, w)
            small = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        sx, sy = w / small.shape[1], h / small.shape[0]
        found = [f.scaled(sx, sy) for f in self.detector.detect(small, Item(name, name, name))]
        found = [f for f in found if min(f.box[2], f.box[3]) >= self.min_face]
        return sorted(found, key=lambda f: (-f.area, -f.score, f.box))

    def classify(self, rgb: Any, name: str) -> list[dict[str, Any]]:
        """One dict per face: box (x, y, w, h), score, label, probability, probabilities."""
        import numpy as np

        from pipeline.images import model_input
        from pipeline.training import predict_arrays
        from stages.crop import cut_face

        faces = self.faces(rgb, name)
        if not faces:
            return []
        batch = [model_input(rgb if self.whole else cut_face(rgb, f, self.crop)[0], self.shape) for f in faces]
        probs = predict_arrays(self.model, np.stack(batch), flip=self.flip)
        out = []
        for f, p in zip(faces, probs, strict=True):
            i = int(p.argmax())
            out.append({"box": [round(v) for v in f.box], "score": round(float(f.score), 4), "label": self.labels[i],
                        "probability": round(float(p[i]), 4),
                        "probabilities": {lab: round(float(v), 4) for lab, v in zip(self.labels, p, strict=True)}})
        return out


def test_flip(metrics: Path) -> bool:
    """Whether the model was scored with its mirror images averaged in (its metrics.json says so);
    predict does the same, so its probabilities are the ones the reported accuracy measured."""
    try:
        return bool(json.loads(metrics.read_text(encoding="utf-8")).get("params", {}).get("test_flip", False))
    except (OSError, ValueError, AttributeError):
        return False


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

    from pipeline.config import ConfigError
    from pipeline.images import Decoded, to_rgb

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

    from pipeline.config import ConfigError
    from pipeline.images import DecodeError, atomic_write

    if args.every < 1 or args.max_frames < 0 or args.min_face < 0:
        raise ConfigError("predict: --every must be >= 1, --max-frames and --min-face >= 0")
    from stages.detectors import DETECTORS

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
