"""Split quality on a realistic AIHub-like record set: per-label proportions, leaks, time.

    python -m bench.split [--n 10000] [--seed 0] [--ratios 0.8,0.1,0.1]

Records are synthesised (no images): persons with lognormal photo counts and their own emotion
mix, 4% of items in duplicate groups (a fifth of them across two persons, joining them). The
baseline is the usual grouped random split (shuffle persons, fill train, then val, then test by
count), measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from stages.split import SplitParams, assign, components

LABELS = ("happy", "embarrassed", "angry", "anxious", "hurt", "sad", "neutral")
MIX = (0.2, 0.14, 0.15, 0.13, 0.12, 0.15, 0.11)


def records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    recs: list[dict[str, Any]] = []
    person = 0
    while len(recs) < n:
        size = min(int(rng.lognormal(3.0, 0.8)) + 1, 300, n - len(recs))
        mix = rng.dirichlet(np.array(MIX) * 20)
        pid = f"{person:08x}"
        for j, lab in enumerate(rng.choice(len(LABELS), size=size, p=mix)):
            recs.append({"key": f"EMOIMG_{LABELS[lab]}/{pid}_{j:04d}.jpg", "label": LABELS[lab], "group": pid,
                         "meta": {}, "metrics": {}})
        person += 1
    order = rng.permutation(len(recs))
    for g in range(int(0.04 * n) // 2):  # duplicate pairs: same person mostly, sometimes two persons
        a = recs[order[2 * g]]
        b = recs[order[2 * g + 1]] if g % 5 == 0 else next(
            (r for r in recs[recs.index(a) + 1 : recs.index(a) + 3] if r["group"] == a["group"]), None)
        for r in (a, b):
            if r is not None:
                r["metrics"]["dup_group"] = f"dup{g}"
    return sorted(recs, key=lambda r: r["key"])


def baseline(recs: Sequence[dict[str, Any]], p: SplitParams) -> list[str]:
    """Grouped random split: components shuffled, then filled in split order by item count."""
    comps = components(recs, None)
    random.Random(p.seed).shuffle(comps)
    out = [""] * len(recs)
    bounds = np.cumsum(p.ratios) * len(recs)
    done = 0
    for comp in comps:
        s = min(int(np.searchsorted(bounds, done, side="right")), len(p.ratios) - 1)
        for i in comp:
            out[i] = p.names[s]
        done += len(comp)
    return out


def evaluate(recs: Sequence[dict[str, Any]], splits: Sequence[str], p: SplitParams) -> tuple[float, int, int]:
    """(worst per-label deviation in points, persons in >1 split, dup groups in >1 split)."""
    totals = Counter(r["label"] for r in recs)
    cells = Counter((r["label"], s) for r, s in zip(recs, splits, strict=True))
    worst = max(abs(cells[lab, s] / n - ratio) for lab, n in totals.items() for s, ratio in zip(p.names, p.ratios, strict=True))
    persons: dict[str, set[str]] = defaultdict(set)
    dups: dict[str, set[str]] = defaultdict(set)
    for r, s in zip(recs, splits, strict=True):
        persons[r["group"]].add(s)
        if r["metrics"].get("dup_group"):
            dups[r["metrics"]["dup_group"]].add(s)
    return 100 * worst, sum(len(v) > 1 for v in persons.values()), sum(len(v) > 1 for v in dups.values())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratios", default="0.8,0.1,0.1")
    args = ap.parse_args(argv)
    p = SplitParams(ratios=tuple(float(x) for x in args.ratios.split(",")), seed=args.seed)
    recs = records(args.n, args.seed)
    persons = len({r["group"] for r in recs})
    comps = components(recs, None)
    print(f"{len(recs)} records, {persons} persons, {sum(1 for r in recs if r['metrics'].get('dup_group'))} in dup groups, "
          f"{len(comps)} components (largest {max(map(len, comps))}); ratios {args.ratios}")
    print(f"{'method':<22} {'worst dev (pts)':>16} {'persons leaked':>15} {'dups leaked':>12} {'seconds':>8}")
    results = {}
    for name, fn in (("grouped random", baseline), ("facesift split", assign)):
        t0 = time.perf_counter()
        splits = fn(recs, p)
        dt = time.perf_counter() - t0
        results[name] = evaluate(recs, splits, p)
        dev, lp, ld = results[name]
        print(f"{name:<22} {dev:>16.2f} {lp:>15} {ld:>12} {dt:>8.3f}")
    base, ours = results["grouped random"][0], results["facesift split"][0]
    print(f"worst-deviation ratio facesift/baseline: {ours / base:.2f}" if base else "")
    again = assign(recs, p)
    print("deterministic (second call identical):", again == assign(recs, p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
