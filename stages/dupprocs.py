"""dedup's verification spread over the cores. Most candidate pairs stop early in small NumPy steps
that hold the GIL, so a second thread gains little: a large decision on the dataset step's mapped
keypoint bank (``dupkeys.Bank``) is verified by processes, each mapping the bank read-only (started
afresh: no fork of a process that holds threads), a chunk of pairs a task. A bank in memory, a small
decision, or processes that cannot start or die: threads (OpenCV's fits release the GIL).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stages import dupverify
from stages.base import cores
from stages.dupkeys import Bank
from stages.dupverify import Evidence

log = logging.getLogger(__name__)

#: From this many pairs on a mapped bank, verification runs in processes, this many pairs a task.
PROCESS_PAIRS = 50_000
PROCESS_CHUNK = 8192
#: Candidate pairs verified per thread task, and thread tasks between two releases of the bank's pages.
VERIFY_CHUNK = 256
RELEASE_EVERY = 64


def prove_candidates(bank: Bank, a: np.ndarray, b: np.ndarray, sets: np.ndarray, todo: list[int], need: int,
                     min_overlap: float) -> dict[int, Evidence]:
    """``dupverify.prove`` of candidate pairs ``todo`` (indices into a, b, sets): the evidence of those it saw matches in."""
    if _worth_processes(bank, len(todo)):
        ks = np.asarray(todo, np.int64)
        found = _in_processes(bank, _prove_in_worker, [a[ks], b[ks], sets[ks]], need, min_overlap)
        if found is not None:
            return {int(ks[k]): ev for k, ev in found}
    proofs: dict[int, Evidence] = {}
    prove = partial(dupverify.prove, bank, a, b, sets, need=need, min_overlap=min_overlap)
    chunks = [todo[s:s + VERIFY_CHUNK] for s in range(0, len(todo), VERIFY_CHUNK)]
    with ThreadPoolExecutor(cores()) as pool:
        for c, (ks_, found_) in enumerate(zip(chunks, pool.map(prove, chunks), strict=True)):
            proofs.update((k, ev) for k, ev in zip(ks_, found_, strict=True) if ev.matches)
            if c % RELEASE_EVERY == RELEASE_EVERY - 1:
                bank.release()  # the pages verification read leave the process (see dupkeys.Bank)
    return proofs


def verify_pairs(bank: Bank, a: np.ndarray, b: np.ndarray) -> dict[int, Evidence] | None:
    """``dupverify.verify`` (in full) of the pairs (a[k], b[k]) in processes, where they are many: per
    pair k, its evidence (empty where it saw no matches); None where processes are not worth it or failed."""
    if not _worth_processes(bank, len(a)):
        return None
    found = _in_processes(bank, _verify_in_worker, [a, b])
    if found is None:
        return None
    seen = dict.fromkeys(range(len(a)), dupverify.NOTHING)
    seen.update(found)
    return seen


def _worth_processes(bank: Bank, pairs: int) -> bool:
    return bank.folder is not None and cores() > 1 and pairs >= PROCESS_PAIRS


def _in_processes(bank: Bank, work: Callable[..., list[tuple[int, Evidence]]], columns: Sequence[np.ndarray],
                  *args: Any) -> list[tuple[int, Evidence]] | None:
    """*work* on chunks of the rows of *columns* in processes, one a core, each mapping *bank*: (row,
    evidence) for the rows it returned; None (with a warning) where a process could not start or died."""
    if bank.folder is None:
        raise ValueError("verification processes need a bank mapped from files")
    cuts = range(0, len(columns[0]), PROCESS_CHUNK)
    try:
        with ProcessPoolExecutor(cores(), mp_context=multiprocessing.get_context("spawn"), initializer=_open_worker_bank,
                                 initargs=(bank.folder, bank.n, bank.sets)) as pool:
            jobs = [pool.submit(work, *(c[s:s + PROCESS_CHUNK] for c in columns), *args) for s in cuts]
            return [(s + k, ev) for s, job in zip(cuts, jobs, strict=True) for k, ev in job.result()]
    except (BrokenProcessPool, OSError) as e:
        log.warning("dedup: verification processes failed (%s); verifying in this process", e)
        return None


_worker_bank: Bank | None = None


def _open_worker_bank(folder: Path, n: int, sets: int) -> None:
    """A verification process's start: the dataset step's bank, mapped read-only."""
    global _worker_bank
    _worker_bank = Bank(n, folder, sets, existing=True)


def _bank() -> Bank:
    if _worker_bank is None:
        raise RuntimeError("a verification process needs _open_worker_bank first")
    return _worker_bank


def _prove_in_worker(a: np.ndarray, b: np.ndarray, sets: np.ndarray, need: int, min_overlap: float) -> list[tuple[int, Evidence]]:
    """(k, evidence) of the pairs (a[k], b[k]) ``dupverify.prove`` saw matches in."""
    bank = _bank()
    found = dupverify.prove(bank, a, b, sets, list(range(len(a))), need, min_overlap)
    bank.release()
    return [(k, ev) for k, ev in enumerate(found) if ev.matches]


def _verify_in_worker(a: np.ndarray, b: np.ndarray) -> list[tuple[int, Evidence]]:
    """(k, evidence) of the pairs (a[k], b[k]) whose keypoints (the views') ``dupverify.verify`` matched."""
    bank, out = _bank(), []
    for k, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        ev = dupverify.verify(bank.get(i), bank.get(j))
        if ev.matches:
            out.append((k, ev))
    bank.release()
    return out
