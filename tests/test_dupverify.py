"""The helpers under dedup's dataset step, against their definitions: keypoint matching
(stages.dupverify) and distinct keys by sorting (stages.phash)."""

from __future__ import annotations

import numpy as np

from stages import dupverify


def test_keypoint_matches_follow_their_definition() -> None:
    """Mutual nearest descriptors passing the ratio test both ways, the first of ties nearest,
    against a brute force over Python ints; with *need*, a pair stops early only when fewer
    than *need* matches pass the first direction."""
    rng = np.random.default_rng(3)

    def brute(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
        d = [[bin(int.from_bytes(x.tobytes(), "big") ^ int.from_bytes(y.tobytes(), "big")).count("1") for y in b] for x in a]
        dt = [list(col) for col in zip(*d, strict=True)]

        def two(row: list[int]) -> tuple[int, int, int]:
            j = min(range(len(row)), key=lambda k: (row[k], k))
            return j, row[j], min(v for k, v in enumerate(row) if k != j)

        out = []
        for i, row in enumerate(d):
            j, first, second = two(row)
            back, _, back_second = two(dt[j])
            if back == i and first < dupverify.RATIO * second and first < dupverify.RATIO * back_second:
                out.append((i, j))
        return out

    for t in range(60):
        na, nb = (int(v) for v in rng.integers(2, 40, 2))
        a = (rng.integers(0, 256, (na, dupverify.DESC)) & rng.choice([1, 3, 255])).astype(np.uint8)  # low entropy: ties
        b = a[rng.integers(0, na, nb)] ^ (rng.random((nb, dupverify.DESC)) < 0.03).astype(np.uint8) if t % 2 else \
            rng.integers(0, 256, (nb, dupverify.DESC), np.uint8)
        ia, ib = dupverify.matches(a, b)  # type: ignore[misc]
        assert list(zip(ia.tolist(), ib.tolist(), strict=True)) == brute(a, b)
        found = dupverify.matches(a, b, need=len(ia) + 1)
        assert found is None or len(found[0]) == len(ia)  # early stop or the same matches, never others
        assert dupverify.matches(a, b, need=len(ia)) is not None  # never stops when that many are there
    a, b = rng.integers(0, 256, (2, 96, dupverify.DESC), np.uint8)  # unrelated: almost nothing passes the ratio test
    assert dupverify.matches(a, b, need=8) is None and dupverify.verify(dupverify.Packed((512, 384), np.zeros((96, 2), np.float32), a),
                                                                        dupverify.Packed((512, 384), np.zeros((96, 2), np.float32), b), 8).inliers == 0


def test_unique_by_sorting_equals_numpy_unique() -> None:
    from stages.phash import unique, unique_counts

    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 7, 5000):
        x = rng.integers(0, max(1, n // 3), n)
        assert np.array_equal(unique(x), np.unique(x))
        got, want = unique_counts(x), np.unique(x, return_counts=True)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
