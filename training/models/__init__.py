"""Keras model zoo: plain functional models, any band count, registered by name."""
from __future__ import annotations

from typing import Callable

ARCHITECTURES: dict[str, tuple[str, str]] = {
    # name: (module, builder) — imported lazily so `lulc --help` never loads TensorFlow
    "unet": ("lulc.training.models.unet", "build_unet"),
}


def get_builder(name: str) -> Callable:
    from importlib import import_module

    if name not in ARCHITECTURES:
        raise KeyError(name)
    module, func = ARCHITECTURES[name]
    return getattr(import_module(module), func)
