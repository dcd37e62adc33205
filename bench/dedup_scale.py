"""bench.dedup's scale figures: the pHash join at 100k-500k hashes and the dedup dataset step at scale
(run through ``python -m bench.dedup``: ``--sizes``, ``--step-n``, ``--skip-scale``).

Dataset step (``--step-n N``): a workspace holding the dedup stage's parts for N images (the
pHashes of the scale set below, and 96 random keypoints each as the row's blob: the size a photo's
take), then, in a fresh process, the records as the runner hands them and the stage's dataset step
with its default settings: wall and CPU seconds, peak resident memory (VmHWM) and peak anonymous
memory (sampled; the rest is the memory-mapped keypoint bank). Random descriptors meet no others:
this measures memory and the pHash side, not the keypoint candidates of real photos.

Keypoint index alone (``--index-n N``): a mapped bank of N images' random descriptors in which
every fifth image copies a third of another's indexed descriptors with 0-39 bits flipped, and
``dupindex.keypoint_pairs`` on it in a fresh process: CPU and wall seconds, peak resident and
anonymous memory of the call, and the share of the planted pairs found.

Scale: 100k and 500k hash sets made from FER2013 train faces under random similarity transforms,
gamma and mirroring (28,709 real faces, the rest variants: denser in near pairs than a real
collection); the join (main, mirrored and 5 window hashes against the index, then connected
components) runs in a fresh process whose peak resident memory is reported. Baselines, on 100k:
faiss's brute-force IndexBinaryFlat range search and its IndexBinaryMultiHash, main hashes alone
(their pair counts must equal ours for "main").
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from stages import dupkeys
from stages.dedup import N_WINDOWS, Dedup, DedupParams, hashes
from stages.dupgroups import CANDIDATE_RADIUS, find_groups
from stages.phash import components, near_pairs, unhex


# -- scale -------------------------------------------------------------------------------------
def _variants(args: tuple[list[bytes], int, int]) -> list[dict[str, Any]]:
    faces, start, count = args
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + count):
        g = np.asarray(Image.open(io.BytesIO(faces[k % len(faces)])).convert("L"))
        if k >= len(faces):
            h, w = g.shape
            m = cv2.getRotationMatrix2D((w / 2 + rng.uniform(-3, 3), h / 2 + rng.uniform(-3, 3)), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
            g = cv2.warpAffine(g, m, (w, h), borderMode=cv2.BORDER_REFLECT)
            g = (255 * (g / 255.0) ** rng.uniform(0.8, 1.25)).astype(np.uint8)
            if rng.random() < 0.5:
                g = np.ascontiguousarray(g[:, ::-1])
        out.append(hashes(g, (g.shape[1], g.shape[0]), keypoints=False))
    return out


def hash_set(shared: Path, n: int) -> list[dict[str, Any]]:
    """*n* hash records: the FER2013 train faces, then variants of them (see the module doc)."""
    import joblib

    with zipfile.ZipFile(shared / "fer2013" / "train.zip") as z:
        faces = [z.read(m) for m in sorted(z.namelist()) if m.endswith(".jpg")]
    step = 20_000
    chunks = [(faces, s, min(step, n - s)) for s in range(0, n, step)]
    parts = joblib.Parallel(n_jobs=2)(joblib.delayed(_variants)(c) for c in chunks)
    return [m for part in parts for m in part]


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it starts afresh at exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def _join_child(path: str, radius: int, flips: bool, crops: bool, conn: Any) -> None:
    """In a fresh process: load the codes, join, report (wall s, cpu s, pairs, groups, MB after imports, peak MB)."""
    import faiss  # noqa: F401  (importing it is not part of the join)

    d = np.load(path)
    codes = {k: d[k] for k in d.files}
    before = _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    queries = [None] + ([codes["flip"]] if flips else []) + ([codes[f"win{k}"] for k in range(N_WINDOWS)] if crops else [])
    src, dst = [], []
    for i, j, _ in near_pairs(codes["main"], radius, queries):
        keep = i != j
        src.append(i[keep])
        dst.append(j[keep])
    root = components(len(codes["main"]), np.concatenate(src), np.concatenate(dst))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    groups = int((np.bincount(root) > 1).sum())
    conn.send((wall, cpu, int(sum(len(x) for x in src)), groups, before, _peak_mb()))


def _baseline_child(path: str, radius: int, kind: str, conn: Any) -> None:
    """faiss brute force (IndexBinaryFlat) or its multi-index hash (3 x 21 bits), main hashes only."""
    import faiss

    main = np.load(path)["main"]
    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))  # as near_pairs does
    before = _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "flat":
        index = faiss.IndexBinaryFlat(64)
    else:
        index = faiss.IndexBinaryMultiHash(64, 3, 21)
        index.nflip = radius // 3
        main = np.vstack([main, np.zeros((1, 8), np.uint8)])[:-1]  # it reads a few bytes past a code
    index.add(main)
    lims, _, ids = index.range_search(main, radius + 1)
    qi = np.repeat(np.arange(len(main)), np.diff(lims.astype(np.int64)))
    conn.send((time.perf_counter() - t0, time.process_time() - c0, int((qi < ids).sum()), before, _peak_mb()))


def _in_child(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, b))
    proc.start()
    res = a.recv()
    proc.join()
    return res


def scale_bench(shared: Path, sizes: Sequence[int], baselines_upto: int) -> None:
    p = DedupParams()
    n_max = max(sizes)
    t0 = time.perf_counter()
    records = hash_set(shared, n_max)
    print(f"scale: {n_max} hash records made in {time.perf_counter() - t0:.0f}s (2 processes); radius {p.radius}; "
          f"{len(os.sched_getaffinity(0))} cores; wall and CPU seconds (CPU: all threads; on a shared machine wall includes waiting for a core)")
    print(f"{'hashes':>8} {'join':<40} {'wall s':>7} {'CPU s':>7} {'pairs':>9} {'groups':>7} {'MB before':>9} {'peak MB':>8}  vs baseline (CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = f"{tmp}/codes{n}.npz"
            recs = records[:n]
            np.savez(path, main=unhex([m["phash"] for m in recs]), flip=unhex([m["phash_flip"] for m in recs]),
                     **{f"win{k}": unhex([m["phash_crops"][16 * k:16 * k + 16] for m in recs]) for k in range(N_WINDOWS)})
            base_cpu = None
            if n <= baselines_upto:
                for kind, what in (("flat", "baseline: faiss IndexBinaryFlat, main"), ("multi", "faiss IndexBinaryMultiHash 3x21, main")):
                    wall, cpu, pairs, before, peak = _in_child(_baseline_child, path, p.radius, kind)
                    base_cpu = base_cpu or cpu
                    ratio = "" if kind == "flat" else f"{base_cpu / cpu:.1f}x"
                    print(f"{n:>8} {what:<40} {wall:>7.2f} {cpu:>7.2f} {pairs:>9} {'':>7} {before:>9.0f} {peak:>8.0f}  {ratio}")
            for what, radius, flips, crops in (("ours: main", p.radius, False, False), ("ours: main + 5 windows", p.radius, False, True),
                                               ("ours: main + mirror + 5 windows", p.radius, True, True),
                                               (f"candidates at {CANDIDATE_RADIUS} bits, + 5 windows", CANDIDATE_RADIUS, False, True)):
                wall, cpu, pairs, groups, before, peak = _in_child(_join_child, path, radius, flips, crops)
                ratio = f"{base_cpu / cpu:.1f}x" if base_cpu else ""
                print(f"{n:>8} {what:<40} {wall:>7.2f} {cpu:>7.2f} {pairs:>9} {groups:>7} {before:>9.0f} {peak:>8.0f}  {ratio}")
            t0, c0 = time.perf_counter(), time.process_time()
            find_groups(recs, p)
            print(f"{n:>8} {'find_groups() on the record dicts':<40} {time.perf_counter() - t0:>7.2f} {time.process_time() - c0:>7.2f}"
                  "  (default; in this process: hex parsing and pixel-hash grouping included)")


# -- the dataset step at scale: time and memory -----------------------------------------------
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field)) / 1024


def _children_mb() -> float:
    """Resident memory of this process's child processes (dedup's verification processes), summed."""
    me, total = os.getpid(), 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) != me:
                    continue
            with open(f"/proc/{d}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # gone meanwhile
    return total / 1024


@contextmanager
def _anon_peak(every: float, children: bool = False) -> Iterator[list[float]]:
    """Samples this process's anonymous resident memory every *every* s while the block runs; the
    yielded list holds the peak in MB (read it after the block), and with *children* the peak of
    this process's resident memory plus its child processes' (second item)."""
    peak = [0.0, 0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            peak[0] = max(peak[0], _status_mb("RssAnon"))
            if children:
                peak[1] = max(peak[1], _status_mb("VmRSS") + _children_mb())

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield peak
    finally:
        done.set()


def write_workspace(shared: Path, work: Path, n: int, shard: int = 5000, crop: str = "") -> None:
    """A workspace holding the dedup stage's parts for *n* images: the pHashes of ``hash_set`` (FER2013
    faces and variants of them) and, as each row's blob, 96 random keypoints (the size a photo's take;
    random descriptors meet no others, so the keypoint index finds nothing: memory, not candidates).
    *crop*: as through crop, the whole image's hashes too and a second set of 96 random keypoints
    with a face box; "same": the whole image's hashes are the face's (the whole images of near
    copies are near copies), "other": another record's (a second near-copy graph as dense as the
    faces' and unrelated to it: the worst case)."""
    from manifests.store import Store
    from pipeline.runner import outcome_row
    from stages.base import Outcome

    records = hash_set(shared, n)
    rng = np.random.default_rng(0)
    store = Store(work)
    head = np.array([512, 384, dupkeys.N_FEATURES], np.uint16).tobytes() + bytes(dupkeys.HEAD - 6)  # size, count, no face box
    whole = np.array([512, 384, dupkeys.N_FEATURES], np.uint16).tobytes() + bytes([96, 64, 160, 144])  # with a face box

    def keypoints(h: bytes) -> bytes:
        return h + rng.integers(0, 256, 2 * dupkeys.N_FEATURES, np.uint8).tobytes() + rng.bytes(dupkeys.DESC * dupkeys.N_FEATURES)
    for s in range(0, n, shard):
        outs = []
        for k in range(s, min(n, s + shard)):
            metrics = {**records[k], "pixels": 48 * 48}
            blob = keypoints(head)
            if crop:
                other = records[(k * 7919 + 1) % n if crop == "other" else k]
                metrics |= {"img_phash": other["phash"], "img_flip": other["phash_flip"], "img_crops": other["phash_crops"]}
                blob += keypoints(whole)
            outs.append(outcome_row(Outcome(f"happy/{k:07d}.jpg", metrics=metrics, blob=blob)))
        store.write_part("dedup", s // shard, outs)


def _step_child(work: str, conn: Any) -> None:
    """In a fresh process: the records as the runner hands them (JSON metrics parsed), then the dedup
    stage's dataset step; sends (records MB, wall s, CPU s, peak MB, peak anonymous MB, duplicates)."""
    import json

    from manifests.store import Store

    cv2.setNumThreads(1)
    work_path = Path(work)
    records = [{"key": r["key"], "source": r["key"], "file": r["key"], "label": "happy", "group": "", "meta": {},
                "metrics": json.loads(r["metrics"])} for r in Store(work_path).read_stage("dedup")]
    base = _status_mb("VmRSS")
    with _anon_peak(0.02, children=True) as peak_anon:
        t0, c0 = time.perf_counter(), time.process_time()
        outs = list(Dedup(DedupParams()).run(records, work_path))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.send((base, wall, cpu, _peak_mb(), peak_anon[0], peak_anon[1], sum(o.status != "kept" for o in outs)))


def step_bench(shared: Path, n: int, crop: str = "") -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        t0 = time.perf_counter()
        write_workspace(shared, Path(tmp), n, crop=crop)
        print(f"dataset step at scale{f' as through crop ({crop})' if crop else ''}: {n:,} images' dedup parts written in "
              f"{time.perf_counter() - t0:.0f} s (pHashes of FER2013 faces and variants; 96 random keypoints "
              f"each{', twice (face and whole image)' if crop else ''} as the blob)")
        base, wall, cpu, peak, anon, together, dups = _in_child(_step_child, tmp)
        print(f"  records as the runner hands them: {base:.0f} MB resident; the dedup dataset step (default settings): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU (this process's threads), peak resident {peak:.0f} MB (anonymous {anon:.0f} MB, "
              f"the rest the memory-mapped keypoints); with its verification processes at most {together:.0f} MB at once "
              f"(sampled); {dups:,} rejected")


# -- the keypoint index alone at scale ---------------------------------------------------------
def _index_child(folder: str, n: int, conn: Any) -> None:
    """In a fresh process: a mapped keypoint bank of *n* images of random descriptors where every
    fifth image is a copy of another whose indexed descriptors are a third noisy copies (0-39 bits
    flipped) of the other's, then ``dupindex.keypoint_pairs`` on it; sends (CPU s, wall s, peak
    resident MB of the call, peak anonymous MB, pairs found, planted pairs, planted pairs found)."""
    from stages import dupindex

    rng = np.random.default_rng(0)
    bank = dupkeys.Bank(n, Path(folder))
    src, dst = rng.integers(0, n, n // 5), rng.integers(0, n, n // 5)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    chunk = 8192
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        bank.desc[lo:hi] = rng.integers(0, 256, (hi - lo, dupkeys.N_FEATURES, dupkeys.DESC), np.uint8)
        bank.release()
    bank.count[:] = dupkeys.N_FEATURES
    slots = np.arange(0, dupindex.INDEXED, 3)
    for lo in range(0, len(src), chunk):
        s, t = src[lo:lo + chunk], dst[lo:lo + chunk]
        p = rng.integers(0, 40, (len(s), len(slots), 1)) / (8 * dupkeys.DESC)
        noise = np.packbits(rng.random((len(s), len(slots), 8 * dupkeys.DESC)) < p, axis=-1)
        for k, (a, b) in enumerate(zip(s.tolist(), t.tolist(), strict=True)):  # in order: a copy may be copied
            bank.desc[b, slots] = bank.desc[a, slots] ^ noise[k]
        bank.release()
    with open("/proc/self/clear_refs", "w") as fh:  # VmHWM from here on
        fh.write("5")
    with _anon_peak(0.01) as peak_anon:
        t0, c0 = time.perf_counter(), time.process_time()
        a, b, _ = dupindex.keypoint_pairs(bank.desc, bank.count, bank.release)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    found = set((a * n + b).tolist())
    planted = set((np.minimum(src, dst) * n + np.maximum(src, dst)).tolist())
    conn.send((cpu, wall, _peak_mb(), peak_anon[0], len(found), len(planted), len(planted & found)))


def index_bench(n: int) -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        cpu, wall, peak, anon, found, planted, hit = _in_child(_index_child, tmp, n)
    print(f"keypoint index alone at {n:,} images (synthetic bank: random descriptors, {planted:,} planted copies): "
          f"{cpu:.1f} s CPU, {wall:.1f} s wall, peak resident {peak:.0f} MB (anonymous {anon:.0f} MB), "
          f"{found:,} pairs, {hit:,} of the planted ({hit / max(planted, 1):.3f})")
