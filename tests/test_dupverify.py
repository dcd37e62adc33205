"""The helpers under dedup's dataset step, against their definitions: keypoint matching and its
batched screen (stages.dupverify) and distinct keys by sorting (stages.phash)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stages import dupkeys, dupverify


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
        a = (rng.integers(0, 256, (na, dupkeys.DESC)) & rng.choice([1, 3, 255])).astype(np.uint8)  # low entropy: ties
        b = a[rng.integers(0, na, nb)] ^ (rng.random((nb, dupkeys.DESC)) < 0.03).astype(np.uint8) if t % 2 else \
            rng.integers(0, 256, (nb, dupkeys.DESC), np.uint8)
        ia, ib = dupverify.matches(a, b)  # type: ignore[misc]
        assert list(zip(ia.tolist(), ib.tolist(), strict=True)) == brute(a, b)
        found = dupverify.matches(a, b, need=len(ia) + 1)
        assert found is None or len(found[0]) == len(ia)  # early stop or the same matches, never others
        assert dupverify.matches(a, b, need=len(ia)) is not None  # never stops when that many are there
    a, b = rng.integers(0, 256, (2, 96, dupkeys.DESC), np.uint8)  # unrelated: almost nothing passes the ratio test
    assert dupverify.matches(a, b, need=8) is None and dupverify.verify(dupkeys.Packed((512, 384), np.zeros((96, 2), np.float32), a),
                                                                        dupkeys.Packed((512, 384), np.zeros((96, 2), np.float32), b), 8).inliers == 0


def test_unique_by_sorting_equals_numpy_unique() -> None:
    from stages.phash import unique, unique_counts

    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 7, 5000):
        x = rng.integers(0, max(1, n // 3), n)
        assert np.array_equal(unique(x), np.unique(x))
        got, want = unique_counts(x), np.unique(x, return_counts=True)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_screen_passes_exactly_the_pairs_with_enough_matches_both_ways(tmp_path: Path, shared: Path) -> None:
    grays = []
    for name in ("fr_obama.jpg", "dl_tom_cruise.jpg", "df_couple.jpg", "df_selfie-many-people.jpg"):
        g = cv2.imread(str(shared / "faces" / "presence" / name), cv2.IMREAD_GRAYSCALE)
        h, w = g.shape
        grays += [g, g[h // 5:h - h // 5, w // 6:w - w // 4],  # a photo, a crop of it and a half-size copy
                  cv2.resize(g, (w // 2, h // 2), interpolation=cv2.INTER_AREA)]
    blobs = [dupkeys.features(g) for g in grays]
    rng = np.random.default_rng(3)
    for n in (96, 40, 2, 1):  # random keypoints, some sets short of the full width
        xy = rng.integers(0, 256, (n, 2), np.uint8).tobytes()
        blobs.append(np.array([400, 300, n], np.uint16).tobytes() + bytes(4) + xy + rng.integers(0, 256, (n, 32), np.uint8).tobytes())
    blobs.append(b"")  # an image without keypoints
    mapped = dupkeys.Bank(len(blobs), tmp_path)
    for i, b in enumerate(blobs):
        mapped.put(i, b)
    everyone = np.arange(len(blobs))
    passed = back_only = 0
    for bank in (dupkeys.Bank.of(blobs), mapped):
        desc, count = bank.descs(everyone)
        assert desc.shape == (len(blobs), dupkeys.N_FEATURES, dupkeys.DESC) and count.tolist()[-5:] == [96, 40, 2, 1, 0]
        # Every ordered pair in one batch (first images sorted, as prove hands them), and each first
        # image's pairs alone: the same answers.
        ia, ib = np.repeat(everyone, len(blobs)), np.tile(everyone, len(blobs))
        for need in (0, 3, 8, 30):
            together = dupverify.screen(bank, ia, ib, 0, need).reshape(len(blobs), len(blobs)).tolist()
            for i in everyone.tolist():
                first = bank.get(i)
                want = []
                for j in everyone.tolist():
                    other = bank.get(j)
                    ok = first is not None and other is not None and len(first.desc) >= 2 and len(other.desc) >= 2
                    want.append(ok and len(dupverify.matches(first.desc, other.desc)[0]) >= need)  # type: ignore[index]
                    back_only += ok and not want[-1] and dupverify.matches(first.desc, other.desc, need) is not None
                assert together[i] == want, (i, need)
                assert dupverify.screen(bank, np.full(len(blobs), i), everyone, 0, need).tolist() == want, (i, need)
                passed += sum(want)
        assert not dupverify.screen(bank, everyone[:0], everyone[:0], 0, 8).size
    assert passed > 4 * len(blobs)  # real pairs pass (each image with itself and its copies), most others do not
    assert back_only  # pairs with enough matches one way but not both: the way back decides there
    assert np.array_equal(mapped.descs(everyone, 1)[1], np.zeros(len(blobs)))  # a set the bank does not hold: empty
    assert not dupverify.screen(mapped, everyone, everyone, 1, 8).any()


def test_a_bank_gives_back_every_set_as_it_was_packed(tmp_path: Path, shared: Path) -> None:
    """``Bank.put`` copies the packed bytes as they are: ``get`` returns what ``unpack_all`` reads from
    the blob, for one set, two sets (through crop: the face crop's, then the whole image's with its
    face box), a face crop without keypoints before the whole image's, and a blob cut short."""
    g = cv2.imread(str(shared / "faces" / "presence" / "df_couple.jpg"), cv2.IMREAD_GRAYSCALE)
    h, w = g.shape
    face, whole = dupkeys.features(g[: h // 2, : w // 2]), dupkeys.features(g, (w / 8, h / 8, w / 4, h / 3))
    blobs = [face, face + whole, dupkeys.EMPTY + whole, (face + whole)[: len(face) + 50], b""]
    for bank in (dupkeys.Bank(len(blobs), tmp_path, sets=2), dupkeys.Bank.of(blobs)):
        if bank.folder is not None:
            for i, b in enumerate(blobs):
                bank.put(i, b)
        for i, b in enumerate(blobs):
            sets = dupkeys.unpack_all(b)
            for s in (0, 1):
                got, want = bank.get(i, s), sets[s] if s < len(sets) and len(sets[s].desc) else None
                assert (got is None) == (want is None), (i, s)
                if got is not None and want is not None:
                    assert got.size == want.size and got.box == want.box, (i, s)
                    assert np.array_equal(got.xy, want.xy) and np.array_equal(got.desc, want.desc), (i, s)
    assert dupkeys.unpack_all(blobs[1])[1].box is not None  # the whole image's face box went through
