"""The head shared by the scene classifiers: one class per ``patch`` cell, repeated over it.

A patch classifier (EuroSAT style) ends in global pooling and dense layers. Here the
pooling is an average over each patch-sized cell and the dense layers act per cell, so on
a training patch it *is* the patch classifier (one cell), and on a whole tile it classifies
every cell at once — a class per stride cell with stride = patch — with no extra code in
the runtime. Nearest upsampling back to pixels keeps the output shaped like a segmenter's.
"""
from __future__ import annotations

import keras
from keras import layers


def scene_model(inputs, features, patch: int, downsample: int, num_classes: int, name: str,
                hidden: int = 128, dropout: float = 0.3) -> keras.Model:
    """Wrap backbone ``features`` (stride ``downsample``) into a per-cell classifier."""
    if patch % downsample:
        raise ValueError(f"patch {patch} px must be a multiple of the backbone stride {downsample}")
    cell = patch // downsample
    x = layers.AveragePooling2D(cell, name="cell_pool")(features) if cell > 1 else features
    x = layers.Dense(hidden, activation="relu", name="cell_dense")(x)
    x = layers.Dropout(dropout, name="cell_dropout")(x)
    x = layers.Dense(num_classes, activation="softmax", name="cell_probs", dtype="float32")(x)
    outputs = layers.UpSampling2D(patch, interpolation="nearest", name="probs")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.divisor = patch
    return model
