"""A small from-scratch patch classifier (the EuroSAT work's baseline CNN, any band count)."""
from __future__ import annotations

import keras
from keras import layers

from lulc.training.models.scene_head import scene_model


def build_scene_cnn(channels: int, num_classes: int, patch: int = 16, depth: int = 2, width: int = 16) -> keras.Model:
    """``depth`` conv-BN-ReLU + max-pool levels, then the per-cell head; ``patch`` % 2**depth == 0."""
    inputs = keras.Input((None, None, channels), name="bands")
    x = inputs
    for level in range(depth):
        x = layers.Conv2D(width * 2**level, 3, padding="same", use_bias=False, name=f"conv{level}")(x)
        x = layers.BatchNormalization(name=f"bn{level}")(x)
        x = layers.Activation("relu", name=f"relu{level}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    return scene_model(inputs, x, patch, 2**depth, num_classes, "scene_cnn", hidden=width * 2**depth)
