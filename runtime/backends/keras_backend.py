"""Keras 3 backend: the bundle's ``model.keras`` on whichever Keras backend is installed.

TensorFlow on CPU boxes, JAX/XLA on GPU boxes. Importing Keras does not import TensorFlow
when ``KERAS_BACKEND`` names another backend, so this stays usable on TF-free installs.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys

import numpy as np

from lulc.runtime.backends import device_arrays
from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BackendUnavailable

#: tiles per model call on a GPU: enough to fill it, small enough for any model we train
GPU_BATCH = 32


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def default_to_jax() -> None:
    """Keras 3 defaults to TensorFlow; where only JAX is installed (our GPU boxes), pick JAX
    before Keras is imported instead of failing on the missing TensorFlow."""
    if "keras" in sys.modules or "KERAS_BACKEND" in os.environ:
        return
    if not _importable("tensorflow") and _importable("jax"):
        os.environ["KERAS_BACKEND"] = "jax"


def jax_cuda_plugin_installed() -> bool:
    """Whether a JAX CUDA plugin distribution is installed, read from metadata without importing JAX."""
    return any((d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda"))
               for d in importlib.metadata.distributions())


@functools.cache  # `auto` and the session both ask; the answer cannot change in a process
def jax_gpu_available() -> bool:
    """A JAX CUDA plugin is installed and sees a GPU (the plugin check keeps CPU boxes from importing JAX)."""
    if not jax_cuda_plugin_installed():
        return False
    import jax

    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:  # plugin present, no usable driver or device
        return False


def on_jax_gpu() -> bool:
    """Whether the keras backend would run on a JAX GPU here (choosing JAX where TF is absent)."""
    if not jax_gpu_available():
        return False
    default_to_jax()
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend() == "jax"
    return os.environ.get("KERAS_BACKEND") == "jax"


def load_keras_model(bundle: Bundle):
    """Load ``model.keras`` in safe mode (no code from the bundle is executed)."""
    default_to_jax()
    try:
        import keras
    except ImportError as exc:
        raise BackendUnavailable(
            "the keras backend needs Keras: install `lulc[train]` or export ONNX and use --backend onnx"
        ) from exc
    path = bundle.artifact_path("keras")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


class KerasSession:
    """The Keras model; on JAX it runs as one jitted XLA program, and on a JAX GPU it takes and
    returns device arrays (DLPack, no host copies)."""

    name = "keras"

    def __init__(self, bundle: Bundle):
        self.model = load_keras_model(bundle)
        import keras

        backend = keras.backend.backend()
        self.device_io = backend == "jax" and jax_gpu_available()
        self._predict = _jax_predict(self.model) if backend == "jax" else self._eager
        self.device = f"keras/{backend}" + ("/gpu" if self.device_io else "")
        if self.device_io:
            self.batch_size = GPU_BATCH

    def _eager(self, batch):
        return self.model(batch, training=False)

    def run(self, batch):
        if self.device_io:
            import jax

            out = self._predict(jax.dlpack.from_dlpack(device_arrays.to_dlpack(batch)))
            return device_arrays.from_dlpack(out.block_until_ready())
        return np.asarray(self._predict(batch), dtype=np.float32)


def _jax_predict(model):
    """One compiled program per batch shape: eager Keras-on-JAX would dispatch layer by layer."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    step = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
    return lambda x: step(trainable, fixed, x)
