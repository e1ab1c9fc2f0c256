"""U-Net for per-pixel land cover (the CORINE U-Net is depth 4, 14 input channels)."""
from __future__ import annotations

import keras
from keras import layers


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(channels: int, num_classes: int, depth: int = 3, width: int = 16) -> keras.Model:
    """U-Net with ``depth`` poolings; H and W of inputs must be multiples of 2**depth.

    Input (N, H, W, channels) z-scored bands; output (N, H, W, num_classes) softmax.
    """
    inputs = keras.Input((None, None, channels), name="bands")
    x = inputs
    skips = []
    # Encoder: conv blocks doubling the width, each followed by 2x2 max pooling.
    for level in range(depth):
        x = _conv_block(x, width * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, width * 2**depth, "bottleneck")
    # Decoder: transposed conv upsampling, concatenate the skip, conv block.
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(width * 2**level, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, width * 2**level, f"dec{level}")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="probs", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="unet")
    model.divisor = 2**depth
    return model
