"""The train stage's input pipeline and scores, without training: the feeder's batches and
augmentation, random erasing, subsets and class weights, the scores, the decoded-image cache."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.train import data as train_data
from stages.train import evaluate as train_eval


def test_batches_are_reproducible_per_epoch_and_augment_in_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 48, 48, 1), dtype=np.uint8)
    y = np.arange(50) % 3
    a = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True)
    assert len(a) == 4
    xb, yb = a[1]
    assert xb.shape == (16, 48, 48, 1) and xb.dtype == np.float32 and yb.shape == (16, 3)
    assert np.array_equal(xb, a[1][0])  # the same batch of the same epoch is the same
    first = [a[i][1] for i in range(len(a))]
    a.on_epoch_end()
    second = [a[i][1] for i in range(len(a))]
    assert sum(len(b) for b in second) == 50 and not all(np.array_equal(p, q) for p, q in zip(first, second, strict=True))
    # A run resumed at epoch 1 sees what an uninterrupted run sees in its epoch 1.
    resumed = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, first_epoch=1, augmented=True)
    assert all(np.array_equal(resumed[i][0], a[i][0]) for i in range(len(a)))
    # The endless stream (one iterator for the whole fit) is the epochs one after another.
    endless = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True, endless=True)
    assert endless.num_batches is None and len(endless) == 4
    fresh = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True)
    epochs = [[fresh[i][0] for i in range(4)]]
    fresh.on_epoch_end()
    epochs.append([fresh[i][0] for i in range(4)])
    assert all(np.array_equal(endless[k][0], epochs[k // 4][k % 4]) for k in range(8))
    later = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True, endless=True, first_epoch=1)
    fresh.on_epoch_end()
    epochs.append([fresh[i][0] for i in range(4)])
    assert all(np.array_equal(later[k][0], epochs[1 + k // 4][k % 4]) for k in range(8))
    # Augmented pixels differ from the originals but stay images of the same content range.
    plain = train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4)
    assert not np.array_equal(plain[0][0], a_first := train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True)[0][0])
    assert 0 <= a_first.min() and a_first.max() <= 255
    # Validation batches: every image once, in order, never augmented.
    v = train_data.batches(x, y, 3, batch=16, shuffle=False, seed=0)
    assert np.array_equal(np.concatenate([v[i][0] for i in range(len(v))]), x.astype(np.float32))


def test_tensorflow_stream_gives_the_feeders_batches_in_order() -> None:
    """TensorFlow gets the batches through tf.data (stages.train.data.tf_stream): the same arrays, in
    the same order, across an epoch's end, with sample weights, and the finite validation feed once."""
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 48, 48, 1), dtype=np.uint8)
    y = np.arange(50) % 3

    def feed(**kw: object) -> object:
        return train_data.batches(x, y, 3, batch=16, shuffle=True, seed=4, augmented=True, erasing=0.5, endless=True,
                                  first_epoch=1, weights={0: 1.0, 1: 2.0, 2: 0.5}, **kw)

    want = feed()
    got = list(train_data.tf_stream(feed(), (48, 48, 1), 3).take(10))  # 2.5 epochs of 4 batches
    assert len(got) == 10 and got[3][0].shape == (2, 48, 48, 1) and got[0][0].dtype.name == "float32"
    for k, batch in enumerate(got):
        assert len(batch) == 3
        assert all(np.array_equal(t.numpy(), w) for t, w in zip(batch, want[k], strict=True)), k  # type: ignore[index]
    val = train_data.batches(x, y, 3, batch=16, shuffle=False, seed=0)
    seen = list(train_data.tf_stream(val, (48, 48, 1), 3))
    assert len(seen) == 4 and np.array_equal(np.concatenate([b[0].numpy() for b in seen]), x.astype(np.float32))
    assert np.array_equal(np.concatenate([b[1].numpy() for b in seen]).argmax(1), y)


def test_random_erasing_blanks_one_rectangle_per_hit_image_reproducibly() -> None:
    x = np.full((200, 48, 48, 1), 128, np.uint8)
    out = train_data.erase(x.copy(), np.random.default_rng(3), 0.5)
    changed = out != 128
    hit = changed.reshape(200, -1).any(axis=1)
    assert 70 <= hit.sum() <= 130  # about half the images at p = 0.5
    for i in np.flatnonzero(hit):  # what changed lies in one rectangle of 2-25% of the image
        rows, cols = np.flatnonzero(changed[i].any(axis=(1, 2))), np.flatnonzero(changed[i].any(axis=(0, 2)))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert 0.015 * 48 * 48 <= box <= 0.26 * 48 * 48, box
    assert np.array_equal(out, train_data.erase(x.copy(), np.random.default_rng(3), 0.5))
    assert np.array_equal(train_data.erase(x.copy(), np.random.default_rng(3), 0.0), x)
    # In the feeder: erasing changes augmented batches and leaves the other augmentation's draws alone.
    rng = np.random.default_rng(0)
    imgs, y = rng.integers(0, 256, (32, 48, 48, 1), dtype=np.uint8), np.arange(32) % 3
    plain = train_data.batches(imgs, y, 3, batch=16, shuffle=True, seed=1, augmented=True)[0][0]
    erased = train_data.batches(imgs, y, 3, batch=16, shuffle=True, seed=1, augmented=True, erasing=1.0)[0][0]
    differs = (plain != erased).reshape(16, -1).mean(axis=1)
    assert (differs > 0).all() and (differs < 0.3).all()


def test_subset_and_class_weights() -> None:
    recs = [{"key": f"{lab}/{i}", "label": lab} for lab, n in (("a", 10), ("b", 25), ("c", 3)) for i in range(n)]
    sub = train_data.subset(recs, 20, seed=0)
    assert len(sub) == 20 and Counter(r["label"] for r in sub) == {"a": 5, "b": 13, "c": 2}
    w = train_data.class_weights(Counter({0: 100, 1: 10}), 2, "balanced")
    assert w is not None and w[1] / w[0] == pytest.approx(10, rel=1e-4)
    assert (w[0] * 100 + w[1] * 10) / 110 == pytest.approx(1)  # mean weight per sample is 1
    s = train_data.class_weights(Counter({0: 100, 1: 10}), 2, "sqrt")
    assert s is not None and s[1] / s[0] == pytest.approx(10 ** 0.5, rel=1e-4)
    assert train_data.class_weights(Counter({0: 1}), 2, "none") is None


def test_scores_match_hand_computed() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    cm = train_eval.confusion(y, p, 4)
    assert cm[:3, :3].tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = train_eval.scores(cm, ["a", "b", "c", "unused"])
    assert s["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert s["per_class"]["a"] == {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3}
    assert s["per_class"]["b"]["precision"] == 0.5 and s["per_class"]["c"]["recall"] == 1.0
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-4)  # the class never seen is left out


def test_the_decoded_cache_follows_the_files_it_was_made_from(tmp_path: Path) -> None:
    files = []
    for i, v in enumerate((40, 200)):
        f = tmp_path / f"{i}.png"
        Image.fromarray(np.full((48, 48), v, np.uint8)).save(f)
        files.append(train_data.Sample(f.name, "a", "train", path=str(f)))
    cache = tmp_path / "cache"
    first = train_data.load(files, (48, 48, 1), cache)
    assert first[:, 0, 0, 0].tolist() == [40, 200]
    assert train_data.load(files, (48, 48, 1), cache).filename == first.filename  # reused
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(files[1].path)  # the crop is made again
    os.utime(files[1].path, ns=(1, 1))
    again = train_data.load(files, (48, 48, 1), cache)
    assert again[:, 0, 0, 0].tolist() == [40, 90]
