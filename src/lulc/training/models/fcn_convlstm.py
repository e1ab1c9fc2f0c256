"""FCN + ConvLSTM (Sefrin, Riese & Keller 2021): a U-Net-style encoder shared by all dates,
a bidirectional ConvLSTM over the encoded sequence, and a decoder to per-pixel classes.

The encoder's layers carry the names of :mod:`.unet`'s encoder (``enc0_conv1``,
``enc0_bn1``, ...) so ``--init-from`` can start it from a single-date U-Net bundle, as the
paper started from its pretrained FCN. Skip connections are the masked mean over the
observed dates of each level's features; the two scan directions are averaged, as in the
paper. Spatial size must be a multiple of 2**depth.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from lulc.training.models.recurrent import bidirectional_final, split_dates


def _shared_block(filters: int, name: str) -> list:
    """Conv-BN-ReLU twice, as layers (not tensors) so every date runs through the same weights."""
    out = []
    for i in (1, 2):
        out += [layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}"),
                layers.BatchNormalization(name=f"{name}_bn{i}"), layers.Activation("relu", name=f"{name}_relu{i}")]
    return out


def _apply(block: list, x):
    for layer in block:
        x = layer(x)
    return x


def _masked_mean(features: list, masks: list):
    """Mean over the dates a pixel observed (0 where it observed none)."""
    total = features[0] * masks[0]
    count = masks[0]
    for f, m in zip(features[1:], masks[1:]):
        total, count = total + f * m, count + m
    return total / ops.maximum(count, 1.0)


def build_fcn_convlstm(channels: int, num_classes: int, time_steps: int, depth: int = 2,
                       width: int = 16) -> keras.Model:
    """Input (N, H, W, T*C) z-scored, NaN on missing dates; output (N, H, W, K) softmax."""
    if channels % time_steps:
        raise ValueError(f"{channels} channels are not {time_steps} dates of equal band count")
    inputs = keras.Input((None, None, channels), name="bands")
    frames, masks = split_dates(inputs, time_steps, channels // time_steps)
    # Encoder shared across dates; masks are max-pooled alongside (observed if any pixel was).
    blocks = [_shared_block(width * 2**level, f"enc{level}") for level in range(depth)]
    pools = [layers.MaxPooling2D(2, name=f"pool{level}") for level in range(depth)]
    mask_pool = layers.MaxPooling2D(2, name="mask_pool")
    skips, level_masks = [[] for _ in range(depth)], [masks]
    for _ in range(depth):
        level_masks.append([mask_pool(m) for m in level_masks[-1]])
    for t in range(time_steps):
        x = frames[t]
        for level in range(depth):
            x = _apply(blocks[level], x)
            skips[level].append(x)
            x = pools[level](x)
        frames[t] = x
    # Bottleneck: bidirectional ConvLSTM over the encoded dates, directions averaged.
    finals = bidirectional_final("lstm", width * 2**depth, 3, frames, level_masks[depth], "convlstm")
    x = (finals[0] + finals[1]) * 0.5
    # Decoder: upsample, concatenate the masked temporal mean of the skip, conv block.
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(width * 2**level, 2, strides=2, padding="same", name=f"up{level}")(x)
        skip = _masked_mean(skips[level], level_masks[level])
        x = layers.Concatenate(name=f"skip{level}")([x, skip])
        x = _apply(_shared_block(width * 2**level, f"dec{level}"), x)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="probs", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="fcn_convlstm")
    model.divisor = 2**depth
    return model


def init_encoder_from(model: keras.Model, unet: keras.Model) -> list[str]:
    """Copy the U-Net's encoder weights into layers of the same name and shape; returns their names."""
    copied = []
    for layer in model.layers:
        if not layer.name.startswith("enc") or not layer.weights:
            continue
        try:
            source = unet.get_layer(layer.name)
        except ValueError:
            continue
        if [w.shape for w in source.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(source.get_weights())
            copied.append(layer.name)
    return copied
