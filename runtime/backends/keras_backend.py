"""Keras 3 backend: the bundle's ``model.keras`` on whichever Keras backend is installed.

TensorFlow on CPU boxes, JAX/XLA on GPU boxes. Importing Keras does not import TensorFlow
when ``KERAS_BACKEND`` names another backend, so this stays usable on TF-free installs.
"""
from __future__ import annotations

import numpy as np

from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BackendUnavailable


def load_keras_model(bundle: Bundle):
    """Load ``model.keras`` in safe mode (no code from the bundle is executed)."""
    try:
        import keras
    except ImportError as exc:
        raise BackendUnavailable(
            "the keras backend needs Keras: install `lulc[train]` or export ONNX and use --backend onnx"
        ) from exc
    path = bundle.artifact_path("keras")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


class KerasSession:
    name = "keras"

    def __init__(self, bundle: Bundle):
        import keras

        self.model = load_keras_model(bundle)
        self.device = f"keras/{keras.backend.backend()}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.model(batch, training=False)
        return np.asarray(out, dtype=np.float32)
