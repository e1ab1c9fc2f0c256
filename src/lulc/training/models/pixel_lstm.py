"""Per-pixel stacked (bi)LSTM over band sequences: the NexGenMap dl-time-series model.

Every convolution is 1x1, so a pixel sees only its own time series; the runtime may tile
it at any size and needs no overlap. NexGenMap's extra Conv3D branch over 3x3 windows is
left to ``mtlcc`` (spatial context is that model's job), and its hard-coded 2 sigmoid
classes become a softmax over any number of classes.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from lulc.training.models.recurrent import ConvCell, run_cell, split_dates


def build_pixel_lstm(channels: int, num_classes: int, time_steps: int, units: int = 64, num_layers: int = 2,
                     dropout: float = 0.3, bidirectional: bool = True) -> keras.Model:
    """Input (N, H, W, T*C) z-scored, NaN on missing dates; output (N, H, W, K) softmax."""
    if channels % time_steps:
        raise ValueError(f"{channels} channels are not {time_steps} dates of equal band count")
    inputs = keras.Input((None, None, channels), name="bands")
    seq, masks = split_dates(inputs, time_steps, channels // time_steps)
    # Stacked LSTM layers: each consumes the per-date outputs of the one below.
    for level in range(num_layers):
        fw = run_cell(ConvCell("lstm", units, 1, f"lstm{level}_fw"), seq, masks)
        if not bidirectional:
            seq = fw
            continue
        bw = run_cell(ConvCell("lstm", units, 1, f"lstm{level}_bw"), seq, masks, reverse=True)
        seq = [ops.concatenate([f, b], axis=-1) for f, b in zip(fw, bw)]
    # Sequence summary: the forward scan's last state, and the backward scan's first.
    x = seq[-1] if not bidirectional else ops.concatenate([seq[-1][..., :units], seq[0][..., units:]], axis=-1)
    # Head: dropout -> dense -> dropout -> softmax, all per pixel.
    x = layers.Dropout(dropout, name="drop1")(x)
    x = layers.Conv2D(units, 1, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="drop2")(x)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="pixel_lstm")
