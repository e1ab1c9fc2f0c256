"""Keras 3 backend: the bundle's ``model.keras`` on whichever Keras backend is installed.

TensorFlow on CPU boxes, JAX/XLA on GPU boxes. Importing Keras does not import TensorFlow
when ``KERAS_BACKEND`` names another backend, so this stays usable on TF-free installs.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from lulc.runtime.backends import Session, check_model_shapes, device_arrays
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, BundleError

logger = logging.getLogger(__name__)

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


def import_keras() -> Any:
    """Keras on its backend (JAX where TensorFlow is absent), or a one-line install hint."""
    default_to_jax()
    try:
        import keras
    except ImportError:
        raise BackendUnavailable(
            "the keras backend needs Keras: install `lulc[train]` or export ONNX and use --backend onnx"
        ) from None
    return keras


def load_keras_model(bundle: Bundle) -> Any:
    """Load ``model.keras`` in safe mode (no code from the bundle is executed)."""
    keras = import_keras()
    path = bundle.artifact_path("keras")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises whatever its zip, h5 and config readers raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "safe_mode" in text or "Lambda" in text:
            raise BundleError(f"{path} contains code (e.g. a Lambda layer) that lulc will not run: Keras safe mode "
                              "refuses it; retrain the model without Lambda layers") from None
        raise BundleError(f"cannot load the Keras model {path} (corrupt or not a .keras file?): {text[:200]}") from None


def _gpu_visible(backend: str) -> bool:
    """Whether the installed Keras backend sees a GPU (JAX asked without importing it on CPU boxes)."""
    if backend == "jax":
        return jax_gpu_available()
    try:
        return bool(import_keras().distribution.list_devices("gpu"))
    except (RuntimeError, ValueError, NotImplementedError):
        return False


class KerasSession(Session):
    """The Keras model; on JAX it runs as one jitted XLA program, and on a JAX GPU it takes and
    returns device arrays (DLPack, no host copies). ``device='cpu'`` loads and runs it under
    ``keras.device('cpu:0')`` on any Keras backend; ``device='cuda'`` needs a visible GPU."""

    name = "keras"
    precision = "fp32"

    def __init__(self, bundle: Bundle, device: str = "auto"):
        keras = import_keras()
        on_cpu = device == "cpu"
        backend = keras.backend.backend()
        if device == "cuda" and not _gpu_visible(backend):
            raise BackendUnavailable(f"--device cuda: Keras on {backend} sees no GPU here; "
                                     "install `lulc[gpu]` on a GPU machine, or use --device cpu")
        self._scope = (lambda: keras.device("cpu:0")) if on_cpu else contextlib.nullcontext
        with self._scope():
            self.model = load_keras_model(bundle)
        check_model_shapes(bundle, "model.keras", self.model.input_shape, self.model.output_shape)
        self.device_io = backend == "jax" and jax_gpu_available() and not on_cpu
        self._predict = _jax_predict(self.model, on_cpu) if backend == "jax" else self._eager
        self.device = f"keras/{backend}" + ("/gpu" if self.device_io else "/cpu" if on_cpu else "")
        if self.device_io:
            self.batch_size = GPU_BATCH
        logger.info("keras backend %s, device %s", backend, self.device)

    def _eager(self, batch: np.ndarray) -> Any:
        with self._scope():
            return self.model(batch, training=False)

    def run(self, batch: Any) -> Any:
        """NumPy in and out, or device arrays in and out (DLPack, no host copies) on a JAX GPU."""
        if self.device_io:
            import jax

            out = self._predict(jax.dlpack.from_dlpack(device_arrays.to_dlpack(batch)))
            return device_arrays.from_dlpack(out.block_until_ready())
        return np.asarray(self._predict(batch), dtype=np.float32)


def _jax_predict(model: Any, on_cpu: bool = False) -> Callable[[Any], Any]:
    """One compiled program per batch shape: eager Keras-on-JAX would dispatch layer by layer.

    On the CPU the weights are committed to the CPU device, so the program runs there even
    where JAX's default device is a GPU.
    """
    import jax

    put = functools.partial(jax.device_put, device=jax.devices("cpu")[0]) if on_cpu else (lambda v: v)
    trainable = [put(v.value) for v in model.trainable_variables]
    fixed = [put(v.value) for v in model.non_trainable_variables]
    step = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
    return lambda x: step(trainable, fixed, x)
