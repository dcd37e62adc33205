"""stages/images.py: every awkward encoding decodes correctly or fails with the right reason."""

from __future__ import annotations

import corpus
import numpy as np
import pytest
from PIL import Image

from stages.images import Decoded, DecodeError, atomic_write, encode_jpeg


def decode(data: bytes, **kw: int) -> Decoded:
    return Decoded.from_bytes(data, **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    ref = corpus.reference()
    d = decode(corpus.oriented_jpeg(orientation, ref))
    assert d.size == ref.size
    got = d.full().astype(int)
    assert got.shape == (ref.height, ref.width, 3)
    assert np.abs(got - np.asarray(ref, int)).mean() < 6
    # the reduced decode goes through DCT scaling and must be upright too
    small = d.at_most(60)
    assert max(small.shape[:2]) == 60 and small.shape[1] > small.shape[0]
    assert small[5, 5, 0] > 150 and small[5, 5, 2] < 100  # red corner top-left


def test_reduced_decode_matches_a_resized_full_decode(shared) -> None:
    data = (shared / "faces/presence/fr_obama.jpg").read_bytes()
    d = decode(data)
    small = d.at_most(300).astype(float)
    import cv2

    ref = cv2.resize(decode(data).full(), (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert max(small.shape) == 300
    assert np.abs(small - ref).mean() < 4


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "decode_error"),
        (b"\xff\xd8\xff\xe0 not really", "decode_error"),
        (bytes(range(256)) * 20, "decode_error"),
        (corpus.png_header(30000, 30000), "too_large"),
    ],
    ids=["zero-byte", "bad-jpeg-header", "random", "30000x30000"],
)
def test_bad_bytes_raise_decode_error_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode(data).full()
    assert e.value.reason == reason


def test_truncated_jpeg_is_a_decode_error(shared) -> None:
    data = (shared / "faces/presence/fr_obama.jpg").read_bytes()
    with pytest.raises(DecodeError, match="decode_error"):
        decode(data[: len(data) // 2]).full()


def test_pixel_limit_is_configurable() -> None:
    data = encode_jpeg(np.zeros((100, 100, 3), np.uint8), 90)
    with pytest.raises(DecodeError, match="too_large"):
        decode(data, max_pixels=9999).full()
    assert decode(data, max_pixels=10000).full().shape == (100, 100, 3)


def test_modes_become_l_or_rgb() -> None:
    ref = corpus.reference()
    cmyk = decode(corpus.jpeg(ref.convert("CMYK"))).full().astype(int)
    assert cmyk.shape[2] == 3 and np.abs(cmyk - np.asarray(ref, int)).mean() < 8
    gray = decode(corpus.jpeg(ref.convert("L"))).full()
    assert gray.ndim == 2
    a16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    sixteen = decode(corpus.encoded(Image.fromarray(a16), "PNG")).full()
    assert sixteen.dtype == np.uint8 and sixteen.ndim == 2
    assert abs(int(sixteen[-1, -1]) - round(int(a16[-1, -1]) * 255 / 65535)) <= 1
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert decode(corpus.encoded(rgba, "PNG")).full()[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    webp = decode(corpus.encoded(ref, "WEBP"))
    assert webp.format == "WEBP" and webp.full().shape == (80, 120, 3)


def test_unreadable_source_is_reported_not_raised_as_oserror() -> None:
    def boom() -> bytes:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(DecodeError) as e:
        Decoded(boom).full()
    assert e.value.reason == "unreadable"


def test_atomic_write_leaves_no_temporary_files(tmp_path) -> None:
    target = tmp_path / "a" / "b.jpg"
    atomic_write(target, b"x" * 10)
    atomic_write(target, b"y" * 5)
    assert target.read_bytes() == b"y" * 5
    assert [p.name for p in target.parent.iterdir()] == ["b.jpg"]


def test_reduced_copy_does_not_depend_on_an_earlier_full_decode(shared) -> None:
    data = (shared / "faces/presence/fr_obama.jpg").read_bytes()
    fresh = decode(data).at_most(333)
    warmed = decode(data)
    warmed.full()
    assert np.array_equal(warmed.at_most(333), fresh)


def test_face_suffix_only_at_the_end_of_a_key() -> None:
    from manifests.keys import key_to_relpath, split_key

    assert split_key("happy/photo#1.jpg") == ("happy/photo#1.jpg", "")
    assert split_key("happy/photo#1.jpg#2") == ("happy/photo#1.jpg", "2")
    assert key_to_relpath("happy/photo#1.jpg", ".jpg") == "happy/photo#1.jpg"
    assert key_to_relpath("happy/photo#1.jpg#2", ".jpg") == "happy/photo#1_face2.jpg"


def test_reduced_copy_from_full_pixels_costs_no_second_decode(shared) -> None:
    from stages.images import CLOCK, shrink

    data = (shared / "faces/presence/fr_obama.jpg").read_bytes()
    d = decode(data)
    d.reduce_from_full = True
    full = d.full()
    decoded = CLOCK["decode"]
    small = d.at_most(333)
    assert CLOCK["decode"] == decoded  # derived from the pixels in memory, not decoded again
    assert np.array_equal(small, shrink(full, 333)) and max(small.shape[:2]) == 333
    # the same pixels whether or not the full image was decoded first, and close to the DCT-scaled copy
    fresh = decode(data)
    fresh.reduce_from_full = True
    assert np.array_equal(fresh.at_most(333), small)
    assert np.abs(decode(data).at_most(333).astype(float) - small).mean() < 3


def test_view_copies_are_made_once_and_do_not_depend_on_what_was_asked_before(shared) -> None:
    from stages.images import VIEW_BASE, View, shrink

    full = decode((shared / "faces/presence/fr_obama.jpg").read_bytes()).full()
    face = np.ascontiguousarray(np.tile(full, (2, 2, 1))[:1100, :1100])  # a square bigger than the base side
    base = shrink(face, VIEW_BASE)
    first, second = View(face), View(face)
    small = first.at_most(256)
    assert np.array_equal(small, shrink(base, 256)) and small.shape == (256, 256, 3)  # half the base copy
    assert first.at_most(256) is small  # quality and dedup share one copy
    for side in (800, 512, 320):  # asked in another order: the same pixels
        assert np.array_equal(second.at_most(side), first.at_most(side))
    assert np.array_equal(second.at_most(256), small)
    assert np.array_equal(first.at_most(800), shrink(face, 800))  # above the base: from the pixels
    assert first.at_most(5000) is face and first.size == (1100, 1100)  # never enlarged


@pytest.mark.parametrize(("h", "w", "side"), [(3000, 4000, 400), (3000, 4000, 480), (1081, 1917, 256), (50, 40, 60), (7, 1000, 100)])
def test_shrink_keeps_the_aspect_and_never_enlarges(h: int, w: int, side: int) -> None:
    from stages.images import shrink

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = shrink(a, side)
    if max(h, w) <= side:
        assert out is a
        return
    s = side / max(h, w)
    assert out.shape == (max(1, round(h * s)), max(1, round(w * s)), 3)
    # area averaging: a flat image stays flat, and the mean level is kept
    assert np.array_equal(shrink(np.full((h, w), 77, np.uint8), side), np.full(out.shape[:2], 77, np.uint8))
    assert abs(float(out.mean()) - float(a.mean())) < 1.5


def test_shrink_by_halvings_matches_one_area_resize() -> None:
    """The halvings then the last area resize give the pixels of one area resize of the whole image,
    up to rounding (a one-pixel shift would differ by 2 levels on average here)."""
    import cv2

    from stages.images import shrink

    y, x = np.mgrid[0:3000, 0:4000]
    a = np.stack([x * 255 // 3999, y * 255 // 2999, 127 + 100 * np.sin(x / 50.0) * np.cos(y / 70.0)], -1).astype(np.uint8)
    blocks: dict[int, np.ndarray] = {}
    out = shrink(a, 640, blocks)
    ref = cv2.resize(a, (640, 480), interpolation=cv2.INTER_AREA)
    diff = np.abs(out.astype(np.int16) - ref)
    assert float(diff.mean()) < 0.5 and int(diff.max()) <= 3  # measured: 0.22 and 2
    assert sorted(blocks) == [2, 4] and blocks[4].shape == (750, 1000, 3)  # halved twice, kept for smaller copies
    assert np.array_equal(shrink(a, 320, blocks), shrink(a, 320))  # the same pixels with or without the cache


@pytest.mark.parametrize("orientation", range(1, 9))
def test_direct_array_decode_gives_the_pillow_pixels(orientation: int, shared) -> None:
    """Complete RGB/gray JPEGs decode straight into an array: the very pixels Pillow gives, upright."""
    for data in (corpus.oriented_jpeg(orientation, corpus.reference()), (shared / "faces/presence/fr_obama.jpg").read_bytes()):
        d = decode(data)
        assert d._direct()
        via_pillow = decode(data)
        via_pillow._no_direct = True
        assert np.array_equal(d.full(), via_pillow.full())
        assert np.array_equal(np.asarray(d.pil()), d.full())


def test_truncated_jpeg_is_left_to_pillow(shared) -> None:
    data = (shared / "faces/presence/fr_obama.jpg").read_bytes()
    d = decode(data[: len(data) // 2])
    assert not d._direct()  # no end-of-image marker: Pillow decides, and says it is truncated
    with pytest.raises(DecodeError):
        d.full()
