"""Keras model zoo: plain functional models, any band count, registered by name.

Every model maps (N, H, W, C) z-scored bands to (N, H, W, K) class probabilities, so the
runtime tiles and blends all of them the same way. Scene classifiers do so by classifying
each ``patch`` x ``patch`` cell of the input and repeating its class over the cell.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from lulc.runtime.core.errors import SettingError
from lulc.runtime.core.manifest import Task
from lulc.training.config import MODEL_OPTIONS, flag_name

# name: (module, builder, task) — imported lazily so `lulc --help` never loads TensorFlow
ARCHITECTURES: dict[str, tuple[str, str, Task]] = {
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


def task_of(name: str) -> Task:
    """What the model's output means to the runtime: segmentation, scene, pixel-series..."""
    return ARCHITECTURES[name][2]


def get_builder(name: str) -> Callable:
    """The builder function of ``name`` (imports its module, and so Keras, only now)."""
    from importlib import import_module

    if name not in ARCHITECTURES:
        raise KeyError(name)
    module, func, _ = ARCHITECTURES[name]
    return getattr(import_module(module), func)


def accepted_options(name: str) -> list[str]:
    """The keyword options of ``name``'s builder: what follows ``channels, num_classes``."""
    return list(inspect.signature(get_builder(name)).parameters)[2:]


def build_model(name: str, channels: int, num_classes: int, **options: Any) -> Any:
    """Build ``name`` with ``options`` (depth, width, patch, weights, units...).

    An option the builder does not take is an error naming the ones it does: dropped
    silently, a misspelt or misplaced option would train the default model unnoticed.
    """
    accepted = accepted_options(name)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        hint = flag_name(unknown[0]) if unknown[0] in MODEL_OPTIONS else f"model_options.{unknown[0]}"
        settable = [k for k in accepted if k != "time_steps"]  # the stack's, not the user's
        raise SettingError(hint, f"is not an option of {name} (its options: {', '.join(settable)})")
    return get_builder(name)(channels, num_classes, **options)
