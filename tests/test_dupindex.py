"""dupindex and the keypoint bank: the keypoint index against its definition, the bank mapped or not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_dedup import crop_area, rgb

from stages import dupkeys, dupverify


def mapped_kb(path: Path) -> int:
    """Resident kB of this process's mapping of *path* (/proc/self/smaps)."""
    rss, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line: "start-end perms offset dev inode path"
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            rss += int(line.split()[1])
    return rss


def test_keypoint_bank_holds_the_blobs_and_the_index_reads_it_mapped_or_not(tmp_path: Path, shared: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import dupindex

    a = cv2.cvtColor(rgb(shared / "faces" / "presence" / "fr_obama.jpg"), cv2.COLOR_RGB2GRAY)
    a = cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)
    grays = [a, np.ascontiguousarray(crop_area(a, 0.4, 0.7, (0.5, 0.35))),
             cv2.cvtColor(rgb(shared / "faces" / "presence" / "dl_tom_cruise.jpg"), cv2.COLOR_RGB2GRAY)]
    blobs = [dupkeys.features(g) for g in grays]
    assert all(isinstance(b, bytes) and (len(b) - 10) % 34 == 0 for b in blobs)
    mem = dupkeys.Bank.of(blobs)
    mapped = dupkeys.Bank(len(blobs), tmp_path)
    for i, b in enumerate(blobs):
        mapped.put(i, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.u8", "count.u8", "desc.u8", "size.u8", "xy.u8"]
    for i, b in enumerate(blobs):
        want, got = dupkeys.unpack(b), mapped.get(i)
        assert want is not None and got is not None and got.size == want.size
        assert np.array_equal(got.desc, want.desc) and np.array_equal(got.xy, want.xy)
    pairs = [tuple(map(np.ndarray.tolist, dupindex.keypoint_pairs(bank.desc, bank.count))) for bank in (mem, mapped)]
    assert pairs[0] == pairs[1]
    # Released pages leave the process (the kernel's own count for the mapping) and are read back
    # from the file: the same keypoints, the same pairs, read in chunks of one image.
    (tmp_path / "big").mkdir()
    big = dupkeys.Bank(2000, tmp_path / "big")
    for i in range(2000):
        big.put(i, blobs[i % 3])
    assert mapped_kb(tmp_path / "big" / "desc.u8") > 1000  # written pages are resident
    big.release()
    assert mapped_kb(tmp_path / "big" / "desc.u8") == 0
    assert np.array_equal(big.get(1999).desc, dupkeys.unpack(blobs[1999 % 3]).desc)  # type: ignore[union-attr]
    desc0 = dupkeys.unpack(blobs[0]).desc  # type: ignore[union-attr]
    assert all(np.array_equal(big.get(i).desc, desc0) for i in range(0, 2000, 3))  # type: ignore[union-attr]
    assert mapped_kb(tmp_path / "big" / "desc.u8") == 0  # get reads the file, not the map (verification reads at random)
    mapped.release()
    assert all(np.array_equal(mapped.get(i).desc, dupkeys.unpack(b).desc) for i, b in enumerate(blobs))  # type: ignore[union-attr]
    monkeypatch.setattr(dupindex, "CHUNK", 1)
    assert tuple(map(np.ndarray.tolist, dupindex.keypoint_pairs(mapped.desc, mapped.count, mapped.release))) == pairs[0]
    gappy = dupkeys.Bank.of([blobs[0], b"", blobs[1], blobs[2]])  # an image without keypoints shifts the entries
    a, b, shared = dupindex.keypoint_pairs(gappy.desc, gappy.count)
    assert (a.tolist(), b.tolist(), shared.tolist()) == ([{0: 0, 1: 2, 2: 3}[x] for x in pairs[0][0]],
                                                         [{0: 0, 1: 2, 2: 3}[x] for x in pairs[0][1]], pairs[0][2])
    assert (0, 1) in list(zip(pairs[0][0], pairs[0][1], strict=True))  # the crop shares keypoints with its photo
    assert dupverify.verify(mapped.get(0), mapped.get(1)).proves(8, 0.1)
    assert dupkeys.Bank.of([b"", blobs[2]]).get(0) is None
    # Two sets an image (through crop: the face's, then the whole image's with the face box): row
    # s * n + i holds image i's set s; a face without keypoints keeps its place with an empty set.
    g = grays[2]
    k = min(1.0, dupkeys.SIDE / max(g.shape))
    two = [blobs[0] + dupkeys.features(g, (40, 60, 100, 120)), dupkeys.EMPTY + blobs[1]]
    (tmp_path / "two").mkdir()
    mapped2 = dupkeys.Bank(2, tmp_path / "two", sets=2)
    for i, b in enumerate(two):
        mapped2.put(i, b)
    for bank in (dupkeys.Bank.of(two), mapped2):
        assert bank.sets == 2 and len(bank) == 2 and len(bank.count) == 4
        face, whole = bank.get(0), bank.get(0, 1)
        assert face is not None and face.box is None and np.array_equal(face.desc, dupkeys.unpack(blobs[0]).desc)  # type: ignore[union-attr]
        assert whole is not None and np.array_equal(whole.desc, dupkeys.unpack_all(two[0])[1].desc)
        assert whole.box is not None and np.allclose(whole.box, np.array([40, 60, 140, 180]) * k, atol=dupkeys.STEP)
        assert bank.get(1) is None and np.array_equal(bank.get(1, 1).desc, dupkeys.unpack(blobs[1]).desc)  # type: ignore[union-attr]
    # Bytes cut short (a damaged part file) keep the sets they hold whole, never a misread one.
    assert len(dupkeys.unpack_all(two[0][:-1])) == 1 and dupkeys.unpack(two[0][:5]) is None
    # Past 2 GiB of descriptors (sparse files): an image index as the int32 the dedup candidates
    # carry still reads the right place.
    (tmp_path / "huge").mkdir()
    huge = dupkeys.Bank(800_000, tmp_path / "huge")
    huge.put(799_999, blobs[1])
    got = huge.get(np.arange(800_000, dtype=np.int32)[-1])
    assert got is not None and np.array_equal(got.desc, dupkeys.unpack(blobs[1]).desc)  # type: ignore[union-attr]


def _keypoint_pairs_by_brute_force(desc: np.ndarray, count: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """dupindex's definition, spelled out: descriptor pairs of two images that share a table's key in
    a bucket of at most MAX_BUCKET entries and lie within MAX_DISTANCE bits, counted per image pair."""
    from stages import dupindex

    per = np.minimum(count.astype(int), dupindex.INDEXED)
    owner = np.repeat(np.arange(len(count)), per)
    slot = np.concatenate([np.arange(k) for k in per])
    d = desc[owner, slot]
    w = d.view(np.uint64)
    dist = sum(np.bitwise_count(w[:, None, k] ^ w[None, :, k]).astype(np.int32) for k in range(w.shape[1]))
    met = np.zeros(dist.shape, bool)
    step = dupindex.BITS // 8
    for t in range(dupindex.TABLES):
        key = d[:, step * t:step * (t + 1)].astype(np.int64) @ (256 ** np.arange(step))
        same = key[:, None] == key[None, :]
        size = same.sum(axis=1)
        met |= same & (size[:, None] <= dupindex.MAX_BUCKET)
    met &= (dist <= dupindex.MAX_DISTANCE) & (owner[:, None] < owner[None, :])
    i, j = np.nonzero(met)
    pairs, shared = np.unique(owner[i] * len(count) + owner[j], return_counts=True)
    ok = shared >= dupindex.MIN_SHARED
    return (pairs[ok] // len(count)).tolist(), (pairs[ok] % len(count)).tolist(), shared[ok].tolist()


def test_keypoint_index_finds_exactly_the_pairs_of_its_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index's shortcuts (bucket counting, the one-word filter, reading in chunks, buckets taken
    a class of keys at a time, both in threads) lose nothing:
    planted copies whose flipped bits all sit in the filter's word, at MAX_DISTANCE and one past it,
    and a bucket of textures too large to be compared."""
    from stages import dupindex

    rng = np.random.default_rng(3)
    n, m = 40, 56
    desc = rng.integers(0, 256, (n, m, 32), dtype=np.uint8)
    count = np.full(n, m, np.uint8)
    count[5], count[6] = 0, 20

    def flip(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
        y = x.copy()
        np.bitwise_xor.at(y, bits // 8, (1 << (bits % 8)).astype(np.uint8))
        return y

    for a, b, lo, hi, k in [(0, 1, 24, 32, 24), (2, 3, 24, 32, 25), (4, 7, 0, 32, 12), (8, 9, 0, 8, 24), (10, 11, 0, 32, 30)]:
        for s in range(12):  # bits flipped inside bytes lo..hi (24-31: word 3, 0-7: word 0)
            desc[b, s] = flip(desc[a, s], rng.choice(np.arange(8 * lo, 8 * hi), k, replace=False))
    desc[12:20, :6, 0:3] = 7  # 48 descriptors with one table-0 key: a bucket over MAX_BUCKET
    desc[12:20, :6, 3:] = desc[12, 0, 3:]
    want = _keypoint_pairs_by_brute_force(desc, count)
    assert (0, 1) in zip(want[0], want[1], strict=True) and (2, 3) not in zip(want[0], want[1], strict=True)
    assert (8, 9) in zip(want[0], want[1], strict=True)
    got = tuple(x.tolist() for x in dupindex.keypoint_pairs(desc, count))
    assert got == want
    monkeypatch.setattr(dupindex, "CHUNK", 3)
    monkeypatch.setattr(dupindex, "PART_ENTRIES", 500)  # the table's buckets a few key classes at a time
    for threads in (1, 3):  # chunks read and classes paired in threads
        monkeypatch.setattr(dupindex, "cores", lambda: threads)  # noqa: B023 (called before the loop moves on)
        assert tuple(x.tolist() for x in dupindex.keypoint_pairs(desc, count)) == want


def test_keypoint_candidates_are_ranked_apart_from_crowded_phash_candidates() -> None:
    """Two images each with more chance pHash candidates than top_k, and a keypoint pair between them
    (a reframed copy): ranked after every pHash candidate it falls out of both images' top k; ranked
    apart it is verified, and the pHash candidates are chosen as they were."""
    from stages import dupindex

    k, n = 3, 12
    a = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    b = np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1])
    d = np.array([5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 11 + dupindex.INDEXED - 20])
    v = np.array([dupindex.MAIN] * 10 + [dupindex.KEYPOINTS])
    mixed = dupindex.nearest(a, b, d, n, k)
    apart = dupindex.nearest_by_kind(a, b, d, v, n, k)
    assert not mixed[-1] and apart[-1]
    assert apart[:-1].tolist() == dupindex.nearest(a[:-1], b[:-1], d[:-1], n, k).tolist()
