"""The loss sees only labelled, valid pixels; class weights and brightness jitter behave."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lulc.runtime.core.manifest import Normalization
from lulc.training.class_weights import balanced, from_file
from lulc.training.data import TileSet
from lulc.training.dataset import make_dataset, pixel_weights
from lulc.training.models import build_model


def tiles(n: int = 4, size: int = 8, seed: int = 0) -> TileSet:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, (n, size, size)).astype(np.uint8)
    y[:, :, :2] = 255  # unlabeled
    valid = np.ones((n, size, size), bool)
    valid[:, :2] = False  # nodata rows
    x = rng.normal(size=(n, size, size, 4)).astype(np.float32)
    x[~valid] = 0.0
    y[~valid] = 255
    return TileSet(x, y, valid, np.zeros(n, np.int64))


def test_nodata_and_unlabeled_pixels_do_not_change_the_loss():
    t = tiles()
    model = build_model("unet", 4, 3, depth=1, width=4)
    model.compile(loss="sparse_categorical_crossentropy")
    x, y, w = next(iter(make_dataset(t, 4)))
    assert float(tf.reduce_sum(w[:, :2])) == 0 and float(tf.reduce_sum(w[:, :, :2])) == 0
    base = model.evaluate(x, y, sample_weight=w, verbose=0)
    # any label under a zero weight, and any input value there, leaves the loss unchanged
    y2 = np.where(w.numpy() == 0, 2 - y.numpy(), y.numpy())
    assert np.isclose(model.evaluate(x, y2, sample_weight=w, verbose=0), base)


def test_class_weights_multiply_the_mask(tmp_path):
    t = tiles()
    weights = balanced(t, 3)
    counts = np.bincount(t.y[t.y != 255], minlength=3)
    np.testing.assert_allclose(weights * counts, counts.sum() / 3)  # every class weighs the same in total
    w = pixel_weights(t, weights)
    assert (w[t.y == 255] == 0).all() and np.allclose(w[t.y == 1], weights[1])
    (tmp_path / "w.json").write_text('{"b": 3.0}')
    np.testing.assert_array_equal(from_file(str(tmp_path / "w.json"), ["a", "b", "c"]), [1.0, 3.0, 1.0])


def test_augmentation_keeps_pairs_and_nodata():
    t = tiles(n=8)
    t.y[:, 4:, 4:] = 1  # a recognisable label block to follow through flips and rotations
    norm = Normalization(mean=[1000.0] * 4, std=[100.0] * 4)
    plain = make_dataset(t, 8)
    aug = make_dataset(t, 8, augment=True, seed=1, brightness=0.2, norm=norm)
    (x0, y0, w0), (x1, y1, w1) = next(iter(plain)), next(iter(aug))
    assert sorted(np.bincount(y1.numpy().ravel())) == sorted(np.bincount(y0.numpy().ravel()))
    assert float(tf.reduce_sum(w1)) == float(tf.reduce_sum(w0))
    # nodata pixels stay exactly 0 (what the runtime feeds); labelled ones were jittered
    assert (np.abs(x1.numpy()).sum(-1) == 0).sum() == (~t.valid).sum()
    assert not np.allclose(np.sort(x1.numpy().ravel()), np.sort(x0.numpy().ravel()))
    again = next(iter(make_dataset(t, 8, augment=True, seed=1, brightness=0.2, norm=norm)))
    np.testing.assert_array_equal(again[0].numpy(), x1.numpy())  # seeded: same batches
