"""joblib map over shards: sequential | loky | dask, with a tqdm progress bar in images.

Results come back as shards finish (any order); the caller writes them. Workers pin native
thread pools to one thread: parallelism comes from shards, not from OpenCV/OpenMP/TF threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import joblib

from stages import progress

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

_THREAD_VARS = ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
_pinned = False


def pin_threads() -> None:
    """Once per worker process: one thread for every native pool we know of. Not called in the
    driver (the sequential backend): the dataset steps, training above all, run there and want
    every core."""
    global _pinned
    if _pinned:
        return
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    cv2.setNumThreads(1)
    _pinned = True


@contextlib.contextmanager
def _dask(workers: int, scheduler: str) -> Iterator[None]:
    from dask.distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        with joblib.parallel_config(backend="dask"):
            yield
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], *, backend: str, workers: int, scheduler: str = "",
              sizes: Sequence[int] | None = None, desc: str = "") -> Iterator[R]:
    """Yield ``fn(task)`` for every task as each finishes; progress counts ``sizes`` (images).

    An exception in a task (or a dead worker) propagates after the results finished before it.
    """
    if not tasks:
        return
    sizes = sizes if sizes is not None else [1] * len(tasks)
    bar = progress.bar(sum(sizes), desc, "img")
    try:
        if backend == "sequential":
            for task, n in zip(tasks, sizes, strict=True):
                yield fn(task)
                bar.update(n)
            return
        if backend == "loky":
            for i, result in _loky(fn, tasks, workers):
                bar.update(sizes[i])
                yield result
            return
        with _dask(workers, scheduler):
            par = joblib.Parallel(n_jobs=-1, return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
            for i, result in par(joblib.delayed(_indexed)(fn, i, t) for i, t in enumerate(tasks)):
                bar.update(sizes[i])
                yield result
    finally:
        bar.close()


def _loky(fn: Callable[[T], R], tasks: Sequence[T], workers: int) -> Iterator[tuple[int, R]]:
    """Tasks on loky worker processes (even for one worker: a crash must not take the driver),
    at most two per worker in flight so a huge task list is not pickled up front."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.executor import get_memmapping_executor

    # joblib's own reusable executor: shared with any joblib.Parallel(backend="loky") in the process.
    pool = get_memmapping_executor(workers, timeout=60)
    todo = iter(enumerate(tasks))
    running = {}
    for i, t in todo:
        running[pool.submit(fn, t)] = i
        if len(running) >= 2 * workers:
            break
    while running:
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for f in finished:
            i = running.pop(f)
            yield i, f.result()
            nxt = next(todo, None)
            if nxt is not None:
                running[pool.submit(fn, nxt[1])] = nxt[0]


def _indexed(fn: Callable[[T], R], i: int, task: T) -> tuple[int, R]:
    return i, fn(task)
