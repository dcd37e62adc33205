"""split: leak-free, label-stratified train/val(/test) assignment of the kept items.

Every person (the item's ``group``, or the first capture group of ``group_regex`` on the key) and
every ``dup_group`` written by dedup must land in exactly one split, so persons and duplicate
groups are first joined into connected components. Components are then placed largest first,
each into the split whose per-label shortfall it fills best (the move that most reduces the
squared error of the per-label proportions). The result depends only on the sorted keys, the
labels, the groups and the seed: never on shard or worker order.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests.keys import split_key
from stages.base import Outcome, Params, Stage, register

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LINK_MODES = ("hardlink", "symlink", "copy")


@dataclass(frozen=True)
class SplitParams(Params):
    ratios: tuple[float, ...] = field(default=(0.8, 0.1, 0.1), metadata={
        "help": "train,val[,test] fractions, summing to 1 (two parts: train/val only)"})
    seed: int = field(default=0, metadata={"help": "seed: same seed and input give the same split"})
    group_regex: str = field(default="", metadata={
        "help": "regex on the key whose first capture group is the person (overrides the source's group)"})
    keep_source: bool = field(default=False, metadata={
        "help": "keep the source's own split (AIHub Training/Validation, FER2013 Usage); "
                "items without one are split by the ratios"})
    link: str = field(default="hardlink", metadata={
        "help": "how WORK/dataset/<split>/<label>/ files are made: hardlink (copy across file systems) | symlink | copy",
        "choices": LINK_MODES})

    def __post_init__(self) -> None:
        r = tuple(float(x) for x in self.ratios)
        object.__setattr__(self, "ratios", r)
        if len(r) not in (2, 3):
            raise ValueError(f"split.ratios needs 2 or 3 parts (train,val[,test]), got {len(r)}")
        if any(x <= 0 for x in r):
            raise ValueError(f"split.ratios must all be > 0, got {','.join(map(str, r))}")
        if abs(sum(r) - 1) > 1e-6:
            raise ValueError(f"split.ratios must sum to 1, got {','.join(map(str, r))} (sum {sum(r):g})")
        if self.group_regex:
            try:
                rx = re.compile(self.group_regex)
            except re.error as e:
                raise ValueError(f"split.group_regex is not a valid regex: {e}") from None
            if rx.groups < 1:
                raise ValueError("split.group_regex needs a capture group, e.g. '^([^_]+)_' (the person)")
        if self.link not in LINK_MODES:
            raise ValueError(f"split.link must be one of {', '.join(LINK_MODES)}, got {self.link!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return SPLITS[: len(self.ratios)]


@register
class Split(Stage[SplitParams]):
    name = "split"
    Params = SplitParams
    columns = ("split",)

    def run(self, records: list[dict[str, Any]], work: Path) -> Iterator[Outcome]:
        p: SplitParams = self.params
        recs = sorted(records, key=lambda r: r["key"])
        splits = assign(recs, p)
        _log_balance(recs, splits, p)
        for r, s in zip(recs, splits, strict=True):
            yield Outcome(r["key"], metrics={"split": s})


def person_of(rec: dict[str, Any], rx: re.Pattern[str] | None) -> str:
    """The person an item belongs to: regex capture, the source's group, else the source image."""
    key = rec["key"]
    if rx is not None and (m := rx.search(key)) and m.group(1):
        return m.group(1)
    # Faces cut from one photo (key#0, key#1) stay together even without a person id.
    return rec.get("group") or "\0" + split_key(key)[0]


def components(recs: Sequence[dict[str, Any]], rx: re.Pattern[str] | None) -> list[list[int]]:
    """Indices of *recs* joined by shared person or dup_group, each list sorted, lists by first index."""
    parent = list(range(len(recs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, rec in enumerate(recs):
        ids = ["p:" + person_of(rec, rx)]
        dup = (rec.get("metrics") or {}).get("dup_group")
        if dup not in (None, ""):
            ids.append(f"d:{dup}")
        for ident in ids:
            j = first.setdefault(ident, i)
            if j != i:
                union(i, j)
    comps: dict[int, list[int]] = {}
    for i in range(len(recs)):
        comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def _tiebreak(seed: int, key: str) -> bytes:
    # A stable per-component random order for equal sizes (Python's hash() is salted per process).
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()


def assign(recs: Sequence[dict[str, Any]], p: SplitParams) -> list[str]:
    """Split name per record (records sorted by key).

    With ``keep_source``, components whose items carry a source split keep it; splits the ratios
    ask for that the source lacks altogether (FER2013 folders have no val, AIHub no test) are
    carved from the source's train in the ratios' proportions; items without a source split fill
    what the ratios still lack overall.
    """
    rx = re.compile(p.group_regex) if p.group_regex else None
    names = p.names
    labels = [r.get("label") or "" for r in recs]
    out = [""] * len(recs)
    have: list[Counter[str]] = [Counter() for _ in names]

    def greedy(comps: list[list[int]], allowed: Sequence[int], share: Sequence[float], have: list[Counter[str]],
               totals: Counter[str]) -> None:
        target = [{lab: share[s] * n for lab, n in totals.items()} for s in range(len(names))]
        # Squared error of per-label proportions: adding counts c to split s changes it by
        # sum_l (c_l^2 - 2 c_l d_sl) / T_l^2 (d = target - have), so take the s with the largest
        # sum_l c_l d_sl / T_l^2: the split whose shortfall in these labels is biggest.
        # Ties (a label one split cannot use better than another) go to the split shortest of items overall.
        size = sum(totals.values())
        for comp in sorted(comps, key=lambda c: (-len(c), _tiebreak(p.seed, recs[c[0]]["key"]))):
            c = Counter(labels[i] for i in comp)
            best = max(allowed, key=lambda s: (round(sum(n * (target[s][lab] - have[s][lab]) / totals[lab] ** 2
                                                          for lab, n in c.items()), 12),
                                               share[s] * size - sum(have[s].values()), -s))
            for i in comp:
                out[i] = names[best]
                have[best][labels[i]] += 1

    comps = components(recs, rx)
    sources = [_source_split(recs, c, names) if p.keep_source else None for c in comps]
    missing = [s for s in names if s not in sources] if any(sources) else []
    free, carve = [], []
    for comp, src in zip(comps, sources, strict=True):
        if src is None:
            free.append(comp)
        elif src == "train" and missing:
            carve.append(comp)
        else:
            for i in comp:
                out[i] = src
                have[names.index(src)][labels[i]] += 1
    if carve:
        sub = [0, *(names.index(s) for s in missing)]
        local: list[Counter[str]] = [Counter() for _ in names]
        share = [p.ratios[s] / sum(p.ratios[t] for t in sub) for s in range(len(names))]
        greedy(carve, sub, share, local, Counter(labels[i] for c in carve for i in c))
        for s in sub:
            have[s].update(local[s])
        log.info("split: %s carved from the source's train (the source has none)", ", ".join(missing))
    greedy(free, range(len(names)), p.ratios, have, Counter(labels))  # over all items: fill what is still short
    return out


def _source_split(recs: Sequence[dict[str, Any]], comp: list[int], names: Sequence[str]) -> str | None:
    """The source's split for a component (majority of its items that have one), or None."""
    votes: Counter[str] = Counter()
    for i in comp:
        s = (recs[i].get("meta") or {}).get("source_split")
        if s in SPLITS:
            votes[s if s in names else names[-1]] += 1  # a source test split with train/val ratios: val
    if not votes:
        return None
    return max(names, key=lambda s: (votes[s], -names.index(s)))


def empty_splits(by_label: Counter[tuple[str, str]], totals: Counter[str], names: Sequence[str]) -> dict[str, list[str]]:
    """Per class with an image, the splits (other than train) that got none of it, classes sorted."""
    return {lab: miss for lab in sorted(totals) if totals[lab]
            and (miss := [s for s in names if s != "train" and not by_label[lab, s]])}


def _log_balance(recs: Sequence[dict[str, Any]], splits: Sequence[str], p: SplitParams) -> None:
    count = Counter(splits)
    by_label: Counter[tuple[str, str]] = Counter((r.get("label") or "", s) for r, s in zip(recs, splits, strict=True))
    totals = Counter(r.get("label") or "" for r in recs)
    worst = max((abs(by_label[lab, s] / n - ratio) for lab, n in totals.items()
                 for s, ratio in zip(p.names, p.ratios, strict=True)), default=0.0)
    log.info("split: %s; worst per-label deviation from the ratios %.1f points",
             ", ".join(f"{s} {count[s]}" for s in p.names), 100 * worst)
    for lab, names in empty_splits(by_label, totals, p.names).items():
        log.warning("split: class %r has no %s image (its %d are all in %s): no score on %s says anything about it",
                    lab, " or ".join(names), totals[lab], " and ".join(s for s in p.names if by_label[lab, s]), " or ".join(names))
    if p.keep_source:
        moved = sum(1 for r, s in zip(recs, splits, strict=True)
                    if (r.get("meta") or {}).get("source_split") in SPLITS and r["meta"]["source_split"] != s)
        if moved:
            log.info("split: %d item(s) not in their source split (carved splits, persons or dup groups kept together)", moved)
