"""A light fully-convolutional net for edge devices (FCN-8s style additive skips).

One conv per level and skips that are *added* after a 1x1 projection to class scores keep
it several times smaller and faster than the U-Net, at some cost in boundary detail.
"""
from __future__ import annotations

import keras
from keras import layers


def build_fcn(channels: int, num_classes: int, depth: int = 3, width: int = 16) -> keras.Model:
    """Encoder of ``depth`` conv+pool levels; decoder of 2x upsampling plus scored skips.

    H and W of inputs must be multiples of 2**depth.
    """
    inputs = keras.Input((None, None, channels), name="bands")
    x = inputs
    skips = []
    # Encoder: conv-BN-ReLU, then 2x2 max pooling.
    for level in range(depth):
        x = layers.Conv2D(width * 2**level, 3, padding="same", use_bias=False, name=f"enc{level}_conv")(x)
        x = layers.BatchNormalization(name=f"enc{level}_bn")(x)
        x = layers.Activation("relu", name=f"enc{level}_relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = layers.Conv2D(width * 2**depth, 3, padding="same", activation="relu", name="bottleneck")(x)
    # Decoder: class scores at the coarsest level, upsampled and summed with each skip's scores.
    scores = layers.Conv2D(num_classes, 1, name="score_bottleneck")(x)
    for level in reversed(range(depth)):
        # learned 2x upsampling, as in FCN-8s; also what ONNX/TF.js take with dynamic H and W
        scores = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", use_bias=False, name=f"up{level}")(scores)
        skip = layers.Conv2D(num_classes, 1, name=f"score_skip{level}")(skips[level])
        scores = layers.Add(name=f"fuse{level}")([scores, skip])
    outputs = layers.Activation("softmax", name="probs", dtype="float32")(scores)
    model = keras.Model(inputs, outputs, name="fcn")
    model.divisor = 2**depth
    return model
