"""Keras model zoo: plain functional models, any band count, registered by name.

Every model maps (N, H, W, C) z-scored bands to (N, H, W, K) class probabilities, so the
runtime tiles and blends all of them the same way. Scene classifiers do so by classifying
each ``patch`` x ``patch`` cell of the input and repeating its class over the cell.
"""
from __future__ import annotations

import inspect
from typing import Callable

# name: (module, builder, task) — imported lazily so `lulc --help` never loads TensorFlow
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "unet": ("lulc.training.models.unet", "build_unet", "segmentation"),
    "fcn": ("lulc.training.models.fcn", "build_fcn", "segmentation"),
    "scene-cnn": ("lulc.training.models.scene_cnn", "build_scene_cnn", "scene"),
    "scene-vgg16": ("lulc.training.models.scene_vgg16", "build_scene_vgg16", "scene"),
    "scene-densenet121": ("lulc.training.models.scene_densenet121", "build_scene_densenet121", "scene"),
    # temporal models read (N, H, W, T*C) date-major stacks; train them with `lulc train-temporal`
    "pixel-lstm": ("lulc.training.models.pixel_lstm", "build_pixel_lstm", "pixel-series"),
    "mtlcc": ("lulc.training.models.mtlcc", "build_mtlcc", "temporal-segmentation"),
    "fcn-convlstm": ("lulc.training.models.fcn_convlstm", "build_fcn_convlstm", "temporal-segmentation"),
}


def task_of(name: str) -> str:
    return ARCHITECTURES[name][2]


def get_builder(name: str) -> Callable:
    from importlib import import_module

    if name not in ARCHITECTURES:
        raise KeyError(name)
    module, func, _ = ARCHITECTURES[name]
    return getattr(import_module(module), func)


def build_model(name: str, channels: int, num_classes: int, **options):
    """Build ``name`` with the options its builder accepts (depth, width, patch, weights...)."""
    builder = get_builder(name)
    accepted = inspect.signature(builder).parameters
    return builder(channels, num_classes, **{k: v for k, v in options.items() if k in accepted})
