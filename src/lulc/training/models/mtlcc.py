"""MTLCC (Rußwurm & Körner 2018): a bidirectional ConvGRU or ConvLSTM encoder over image
time series and a convolutional softmax classifier.

Defaults follow the paper's small model: one layer, 3x3 kernels, 24 filters, GRU cells,
final-state aggregation, batch norm, then a 3x3 conv softmax. The paper's day-of-year and
year channels are left out: T is fixed per bundle, so the position in the sequence already
says which date a frame is. Missing dates are masked per pixel (see :mod:`.recurrent`).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from lulc.training.models.recurrent import bidirectional_final, split_dates


def build_mtlcc(channels: int, num_classes: int, time_steps: int, filters: int = 24, kernel: int = 3,
                cell: str = "gru", bidirectional: bool = True) -> keras.Model:
    """Input (N, H, W, T*C) z-scored, NaN on missing dates; output (N, H, W, K) softmax."""
    if channels % time_steps:
        raise ValueError(f"{channels} channels are not {time_steps} dates of equal band count")
    inputs = keras.Input((None, None, channels), name="bands")
    frames, masks = split_dates(inputs, time_steps, channels // time_steps)
    # Encoder: final states of the forward and backward scans, concatenated.
    finals = bidirectional_final(cell, filters, kernel, frames, masks, f"conv{cell}", bidirectional)
    x = ops.concatenate(finals, axis=-1) if len(finals) > 1 else finals[0]
    x = layers.BatchNormalization(name="bn")(x)
    # Classifier: a 3x3 convolution to class probabilities.
    outputs = layers.Conv2D(num_classes, 3, padding="same", activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"mtlcc_{cell}")
