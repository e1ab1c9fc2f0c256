"""tf.data pipelines: masked, class-weighted per-pixel sample weights and on-the-fly augmentation.

Nodata and unlabeled pixels get weight 0, so incomplete tiles stay usable (the weighted loss
of the change-detection paper) instead of being thrown away. Augmentation runs as a map on
the fly, seeded per example so a run with the same ``--seed`` sees the same batches.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lulc.runtime.core.manifest import Normalization
from lulc.training.data import TileSet
from lulc.training.labels import IGNORE


def pixel_weights(tiles: TileSet, class_weights: np.ndarray | None = None) -> np.ndarray:
    """(N, T, T) float32 loss weights: 0 where unlabeled or nodata, else the class weight."""
    labeled = (tiles.y != IGNORE) & tiles.valid
    if class_weights is None:
        return labeled.astype(np.float32)
    lookup = np.zeros(256, dtype=np.float32)
    lookup[: len(class_weights)] = class_weights
    return np.where(labeled, lookup[tiles.y], 0.0).astype(np.float32)


def _geometric(t, seed):
    """Flips and a 90-degree rotation; the same seed gives the same transform for every tensor."""
    t = tf.image.stateless_random_flip_left_right(t, seed)
    t = tf.image.stateless_random_flip_up_down(t, seed + 1)
    return tf.image.rot90(t, tf.random.stateless_uniform((), seed + 2, 0, 4, dtype=tf.int32))


def _augment(x, y, w, v, seed, brightness: float, offset):
    """Geometric transforms for all, then brightness jitter on the valid pixels of x.

    x is z-scored, so scaling the raw reflectance by f becomes ``f * x + (f - 1) * mean / std``;
    nodata pixels stay at 0, as the runtime feeds them.
    """
    x = _geometric(x, seed)
    yw = _geometric(tf.stack([tf.cast(y, tf.float32), w, v], axis=-1), seed)
    y, w, v = tf.cast(tf.round(yw[..., 0]), tf.int32), yw[..., 1], yw[..., 2]
    if brightness > 0:
        f = tf.random.stateless_uniform((), seed + 3, 1.0 - brightness, 1.0 + brightness)
        x = tf.where(v[..., None] > 0.5, f * x + (f - 1.0) * offset, x)
    return x, y, w


def make_dataset(
    tiles: TileSet,
    batch_size: int,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    class_weights: np.ndarray | None = None,
    brightness: float = 0.0,
    norm: Normalization | None = None,
):
    """(x, y, sample_weight) batches for Keras ``fit``."""
    y = np.where(tiles.y != IGNORE, tiles.y, 0).astype(np.int32)
    w = pixel_weights(tiles, class_weights)
    ds = tf.data.Dataset.from_tensor_slices((tiles.x, y, w, tiles.valid.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(tiles), seed=seed, reshuffle_each_iteration=True)
    if augment:
        offset = np.zeros(tiles.x.shape[-1], np.float32)
        if brightness and norm is not None:
            offset = (np.asarray(norm.mean) / np.asarray(norm.std)).astype(np.float32)
        counter = tf.data.Dataset.counter(seed).map(lambda i: tf.stack([i, tf.constant(seed, tf.int64)]))
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda d, s: _augment(*d, tf.cast(s, tf.int32), brightness, offset), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y, w, v: (x, y, w))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
