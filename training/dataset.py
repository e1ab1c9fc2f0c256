"""tf.data pipelines: masked per-pixel sample weights and on-the-fly augmentation."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lulc.training.data import TileSet
from lulc.training.labels import IGNORE


def _augment(x, y, w, seed):
    """Random flips and 90-degree rotations, identical for image, labels and weights."""
    stacked = tf.concat([x, tf.cast(y[..., None], x.dtype), w[..., None]], axis=-1)
    stacked = tf.image.stateless_random_flip_left_right(stacked, seed)
    stacked = tf.image.stateless_random_flip_up_down(stacked, seed + 1)
    k = tf.random.stateless_uniform((), seed + 2, 0, 4, dtype=tf.int32)
    stacked = tf.image.rot90(stacked, k)
    c = x.shape[-1]
    return stacked[..., :c], tf.cast(tf.round(stacked[..., c]), tf.int32), stacked[..., c + 1]


def make_dataset(tiles: TileSet, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0):
    """(x, y, sample_weight) batches; unlabeled pixels get weight 0 so the loss ignores them."""
    labeled = tiles.y != IGNORE
    y = np.where(labeled, tiles.y, 0).astype(np.int32)
    w = labeled.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((tiles.x, y, w))
    if shuffle:
        ds = ds.shuffle(len(tiles), seed=seed, reshuffle_each_iteration=True)
    if augment:
        counter = tf.data.Dataset.counter(seed).map(lambda i: tf.stack([i, tf.constant(seed, tf.int64)]))
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda d, s: _augment(*d, tf.cast(s, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
