"""Deterministic generator of realistic AIHub-like face-emotion data (benchmarks, tests, demo).

Real faces from the shared sample photos are pasted into synthetic photo-like backgrounds and
written with AIHub's Korean folder/file naming, AIHub-format label JSON and a ``truth.csv``.

    python -m bench.generate --out DIR [--n 200] [--sizes 1920x1080,4000x3000] [--zip] [--seed 0]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

EMOTIONS = ("기쁨", "당황", "분노", "불안", "상처", "슬픔", "중립")
# Background names as they appear in real AIHub file names ('&' becomes '/' in the JSON).
BACKGROUNDS = ("숙박 및 거주공간", "도심 환경", "실외 자연환경", "상업시설&점포&시장",
               "공공시설&종교&의료시설", "교통&이동수단(엘리베이터 포함)", "행사&사무공간",
               "문화재 및 유적지", "오락&공연시설", "스포츠 관람 및 레저시설")
PER_FOLDER = 40          # images per [원천] folder before splitting into _02, _03, ...
MARGIN = 0.30            # context margin around the face box, fraction of the box size
UTF8_FLAG = 0x800
Box = tuple[int, int, int, int]


class CP949ZipInfo(zipfile.ZipInfo):
    """ZipInfo whose name is stored in CP949 without the UTF-8 flag (Korean Windows style)."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("cp949"), self.flag_bits & ~UTF8_FLAG


@lru_cache(maxsize=64)
def _load(path: str) -> np.ndarray:
    """Decode an image file (any name, any format cv2 knows) to BGR uint8."""
    import cv2
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {path}")
    return img


def _box(r: dict[str, str]) -> Box:
    return int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])


def _sources(shared: Path) -> tuple[list[tuple[str, Box]], list[str]]:
    """(face sources [(path, box)], texture paths) from the shared sample data, largest faces first."""
    faces: list[tuple[str, Box]] = []
    textures: list[str] = []
    with open(shared / "faces" / "presence.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            path = str(shared / "faces" / r["file"])
            if r["has_face"] == "0":
                textures.append(path)
            # one whole face with a known box (partial crops of the same photo are skipped)
            elif r["n_faces"] == "1" and r["x"] and r["face_kind"] == "real":
                faces.append((path, _box(r)))
    groups: dict[str, list[Box]] = {}
    with open(shared / "faces" / "groups.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            groups.setdefault(r["file"], []).append(_box(r))
    for name, boxes in groups.items():
        for b in boxes:
            if min(b[2], b[3]) < 30:
                continue
            m = MARGIN * max(b[2], b[3])
            x0, y0, x1, y1 = b[0] - m, b[1] - m, b[0] + b[2] + m, b[1] + b[3] + m
            # skip faces whose context margin would carry a big piece of a neighbouring face
            if any(o != b and max(0, min(x1, o[0] + o[2]) - max(x0, o[0]))
                   * max(0, min(y1, o[1] + o[3]) - max(y0, o[1])) > 0.25 * o[2] * o[3]
                   for o in boxes):
                continue
            faces.append((str(shared / "faces" / name), b))
    faces.sort(key=lambda f: (-f[1][2] * f[1][3], f[0], f[1]))
    if not faces or not textures:
        raise SystemExit(f"no usable faces/textures under {shared}")
    return faces, sorted(textures)


def _geometry(rng: np.random.Generator, src_shape: tuple[int, ...], box: Sequence[int],
              size: tuple[int, int]) -> dict[str, Any]:
    """Crop (face + margin) in the source, its pasted size/position and the true face box."""
    W, H = size
    sh, sw = src_shape[:2]
    fx, fy, fw, fh = box
    m = MARGIN * max(fw, fh)
    c = (max(0, round(fx - m)), max(0, round(fy - m)), min(sw, round(fx + fw + m)), min(sh, round(fy + fh + m)))
    cw, ch = c[2] - c[0], c[3] - c[1]
    s = rng.uniform(0.15, 0.40) * H / fh
    s = min(s, 0.95 * W / cw, 0.95 * H / ch)
    pw, ph = max(1, round(cw * s)), max(1, round(ch * s))
    px, py = int(rng.integers(0, W - pw + 1)), int(rng.integers(0, H - ph + 1))
    sx, sy = pw / cw, ph / ch
    face = (round(px + (fx - c[0]) * sx), round(py + (fy - c[1]) * sy), round(fw * sx), round(fh * sy))
    return {"crop": c, "patch": (px, py, pw, ph), "face": face}


def _ramp(n: int, a: float, b: float) -> np.ndarray:
    """1-D soft edge: 0 at both ends, 1 inside, smoothstep over a (start) and b (end) pixels."""
    i = np.arange(n, dtype=np.float32)
    t = np.clip(np.minimum(i / max(a, 1.0), (n - 1 - i) / max(b, 1.0)), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _render(task: dict[str, Any]) -> int:
    """Make one image and write it to task['path']; returns bytes written. Deterministic."""
    import cv2
    cv2.setNumThreads(1)
    rng = np.random.default_rng([task["seed"], task["idx"]])
    W, H = task["size"]
    # background: smooth random colour gradient + blurred, upscaled crop of a no-face photo
    grad = cv2.resize(rng.integers(25, 231, (3, 3, 3), dtype=np.uint8), (W, H),
                      interpolation=cv2.INTER_LINEAR)
    tex = _load(task["texture"])
    th, tw = tex.shape[:2]
    cw = max(8, int(rng.uniform(0.4, 0.9) * min(tw, th * W / H)))
    ch = max(8, min(th, int(cw * H / W)))
    x0, y0 = int(rng.integers(0, tw - cw + 1)), int(rng.integers(0, th - ch + 1))
    small = cv2.resize(tex[y0:y0 + ch, x0:x0 + cw], (max(8, W // 8), max(8, H // 8)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(1.5, 4.0)))
    if rng.random() < 0.5:
        small = np.ascontiguousarray(small[:, ::-1])
    a = float(rng.uniform(0.45, 0.75))
    img = cv2.addWeighted(cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR), a, grad, 1 - a, 0)
    # face with context, resized and softly blended in (float only over the patch)
    cx0, cy0, cx1, cy1 = task["crop"]
    px, py, pw, ph = task["patch"]
    src = _load(task["face_src"])[cy0:cy1, cx0:cx1]
    interp = cv2.INTER_CUBIC if pw > src.shape[1] else cv2.INTER_AREA
    patch = cv2.resize(src, (pw, ph), interpolation=interp).astype(np.float32)
    fx, fy, fw, fh = task["face"]
    ml, mt = fx - px, fy - py
    mr, mb = px + pw - (fx + fw), py + ph - (fy + fh)
    alpha = (_ramp(ph, 0.8 * mt, 0.8 * mb)[:, None] * _ramp(pw, 0.8 * ml, 0.8 * mr)[None, :])[..., None]
    region = img[py:py + ph, px:px + pw].astype(np.float32)
    region += alpha * (patch - region)
    img[py:py + ph, px:px + pw] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    # Gaussian sensor noise (sigma 4; cv2's RNG seeded from the numpy Generator), then JPEG
    cv2.setRNGSeed(int(rng.integers(1, 2**31)))
    noise = np.empty((H, W * 3), np.int16)
    cv2.randn(noise, 0, 4)  # type: ignore[call-overload]
    img = cv2.add(img, noise.reshape(H, W, 3), dtype=cv2.CV_8U)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(task["quality"])])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    data = buf.tobytes()
    Path(task["path"]).write_bytes(data)
    return len(data)


def _record(rng: np.random.Generator, fname: str, person: dict[str, Any], emo: str, bg: str,
            face: Sequence[int], size: tuple[int, int], labels: Sequence[str]) -> dict[str, Any]:
    """One AIHub label record; boxes jittered per annotator by up to 3% of the box size."""
    x, y, w, h = face
    rec: dict[str, Any] = {"filename": fname, "gender": person["gender"], "age": person["age"],
                           "isProf": person["prof"], "faceExp_uploader": emo,
                           "bg_uploader": bg.replace("&", "/")}
    for k, lab in zip("ABC", labels, strict=True):
        j = rng.uniform(-0.03, 0.03, 4) * np.array([w, h, w, h])
        bx = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))] if rng.random() < 0.15 else bg
        rec[f"annot_{k}"] = {"boxes": {"maxX": float(min(size[0], x + w + j[2])),
                                       "maxY": float(min(size[1], y + h + j[3])),
                                       "minX": float(max(0.0, x + j[0])), "minY": float(max(0.0, y + j[1]))},
                             "faceExp": lab, "bg": bx.replace("&", "/")}
    return rec


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 64 for s in sizes):
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}, want e.g. 1920x1080,4000x3000")
    return sizes  # type: ignore[return-value]


def _write_zip(path: Path, members: list[tuple[str, bytes, datetime]], method: int) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, ts in members:
            zi = CP949ZipInfo(name, date_time=ts.timetuple()[:6])
            zi.compress_type, zi.create_system, zi.external_attr = method, 0, 0x20
            zf.writestr(zi, data)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created; old generated files in it are replaced)")
    p.add_argument("--n", type=int, default=200, help="number of images to generate (default 200)")
    p.add_argument("--sizes", type=_parse_sizes, default="1920x1080,4000x3000",
                   help="comma-separated WxH image sizes, cycled over the images (default 1920x1080,4000x3000)")
    p.add_argument("--persons", type=int, default=20, help="max number of distinct persons/source faces (default 20)")
    p.add_argument("--zip", action="store_true",
                   help="write each [원천]/[라벨] folder as a .zip with CP949 member names (no UTF-8 flag)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed gives byte-identical output (default 0)")
    p.add_argument("--shared", type=Path, default=Path("../shared/data"),
                   help="shared sample data folder with faces/ (default ../shared/data)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes, 1 = in-process (default 2)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(args.sizes, str):
        args.sizes = _parse_sizes(args.sizes)
    t0 = time.perf_counter()
    shared: Path = args.shared
    if not (shared / "faces").is_dir():
        shared = Path(__file__).resolve().parents[1] / "../shared/data"
    faces, textures = _sources(shared)
    rng = np.random.default_rng(args.seed)
    n, out = max(0, args.n), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("[[]원천[]]EMOIMG_*"), *out.glob("[[]라벨[]]EMOIMG_*"), out / ".staging", out / "truth.csv"]:
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    persons: list[dict[str, Any]] = []
    for p in range(max(1, min(args.persons, len(faces)))):
        persons.append({"hash": hashlib.sha256(f"facesift-bench-{args.seed}-person-{p:04d}".encode()).hexdigest(),
                        "gender": ("남", "여")[int(rng.integers(2))], "age": int(rng.integers(1, 7)) * 10,
                        "prof": "전문인" if rng.random() < 0.3 else "일반인", "face": faces[p]})
    ts = datetime(2020, 11, 1) + timedelta(seconds=int(rng.integers(0, 60 * 86400)))
    images: list[dict[str, Any]] = []
    per_emo = {e: 0 for e in EMOTIONS}
    for i in range(n):
        person = persons[i % len(persons)]
        emo = EMOTIONS[(i + i // len(persons)) % len(EMOTIONS)]
        size = args.sizes[i % len(args.sizes)]
        bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        ts += timedelta(seconds=int(rng.integers(17, 240)))
        fname = (f"{person['hash']}_{person['gender']}_{person['age']}_{emo}_{bg}_{ts:%Y%m%d%H%M%S}"
                 f"-{int(rng.integers(1, 11)):03d}-{int(rng.integers(1, 31)):03d}.jpg")
        folder = f"[원천]EMOIMG_{emo}_TRAIN_{per_emo[emo] // PER_FOLDER + 1:02d}"
        per_emo[emo] += 1
        fsrc, fbox = person["face"]
        geo = _geometry(rng, _load(fsrc).shape, fbox, size)
        images.append({"idx": i, "fname": fname, "folder": folder, "person": person, "emo": emo, "bg": bg,
                       "ts": ts, "size": size, "face_src": fsrc, "texture": textures[int(rng.integers(len(textures)))],
                       "seed": args.seed, "quality": args.quality, **geo})
    # which records to drop / add / disagree (counts fixed, positions random)
    enough = n >= 10
    order = [int(k) for k in rng.permutation(n)]
    n_drop, n_ghost = (max(1, round(0.02 * n)), max(1, round(0.01 * n))) if enough else (0, 0)
    dropped = set(order[:n_drop])
    n3, n1 = (max(1, round(0.03 * n)), max(1, round(0.10 * n))) if enough else (0, 0)
    three, one = set(order[n_drop:n_drop + n3]), set(order[n_drop + n3:n_drop + n3 + n1])
    records: dict[str, list[dict[str, Any]]] = {e: [] for e in EMOTIONS}
    for im in images:
        im["in_labels"] = int(im["idx"] not in dropped)
        labels = [im["emo"]] * 3
        if im["idx"] in three:
            labels = [EMOTIONS[k] for k in rng.choice(len(EMOTIONS), 3, replace=False)]
        elif im["idx"] in one:
            labels[int(rng.integers(3))] = rng.choice([e for e in EMOTIONS if e != im["emo"]])
        rec = _record(rng, im["fname"], im["person"], im["emo"], im["bg"], im["face"], im["size"],
                      [str(v) for v in labels])
        if im["in_labels"]:
            records[im["emo"]].append(rec)
    for g in range(n_ghost):  # label records whose image does not exist
        person, emo = persons[int(rng.integers(len(persons)))], EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        ts += timedelta(seconds=int(rng.integers(17, 240)))
        fname = f"{person['hash']}_{person['gender']}_{person['age']}_{emo}_{bg}_{ts:%Y%m%d%H%M%S}-{g + 1:03d}-001.jpg"
        recs = records[emo]
        recs.insert(int(rng.integers(len(recs) + 1)),
                    _record(rng, fname, person, emo, bg, (600, 300, 420, 560), (1920, 1080), [emo] * 3))
    # render images (workers write files; zip mode stages them first)
    stage = out / ".staging" if args.zip else out
    tasks = []
    for im in images:
        (stage / im["folder"]).mkdir(parents=True, exist_ok=True)
        tasks.append({k: im[k] for k in ("idx", "seed", "quality", "size", "face_src", "texture",
                                         "crop", "patch", "face")} | {"path": str(stage / im["folder"] / im["fname"])})
    try:  # pickle the worker by module reference even when run as __main__
        from bench.generate import _render as render
    except ImportError:
        render = _render
    if args.jobs > 1 and len(tasks) > 1:
        from joblib import Parallel, delayed
        sizes = Parallel(n_jobs=args.jobs)(delayed(render)(t) for t in tasks)
    else:
        sizes = [render(t) for t in tasks]
    total = int(sum(sizes))
    label_files = {e: (f"[라벨]EMOIMG_{e}_TRAIN", f"img_emotion_training_data({e}).json",
                       json.dumps(recs).encode("utf-8")) for e, recs in records.items() if recs}
    if args.zip:
        for folder in sorted({im["folder"] for im in images}):
            members = [(im["fname"], (stage / folder / im["fname"]).read_bytes(), im["ts"])
                       for im in images if im["folder"] == folder]
            _write_zip(out / f"{folder}.zip", members, zipfile.ZIP_STORED)
        stamp = ts.replace(second=ts.second // 2 * 2)
        for folder, name, data in label_files.values():
            _write_zip(out / f"{folder}.zip", [(name, data, stamp)], zipfile.ZIP_DEFLATED)
        shutil.rmtree(stage)
    else:
        for folder, name, data in label_files.values():
            (out / folder).mkdir(exist_ok=True)
            (out / folder / name).write_bytes(data)
    with open(out / "truth.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "person_hash", "emotion", "x", "y", "w", "h", "img_w", "img_h", "in_labels", "folder"])
        for im in images:
            w.writerow([im["fname"], im["person"]["hash"], im["emo"], *im["face"], *im["size"], im["in_labels"], im["folder"]])
    n_rec = sum(len(r) for r in records.values())
    print(f"bench.generate: {n} images ({n_drop} without label), {n_rec} label records ({n_ghost} without image), "
          f"{total} image bytes, {time.perf_counter() - t0:.1f}s -> {out}{' (zip)' if args.zip else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
