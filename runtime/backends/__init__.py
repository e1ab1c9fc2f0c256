"""Inference backends: one module each, GPU-only imports inside their own module.

A backend ``prepare(bundle)`` returns a :class:`Session` whose ``run`` maps a normalised
NHWC float32 batch to class probabilities. ``auto`` picks the fastest one available.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BackendUnavailable

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "trt", "onnx", "keras")


class Session(Protocol):
    """Optional: ``device_io`` (True: ``run`` takes and returns CUDA device arrays, so the block
    pipeline keeps its buffers on the GPU), ``batch_size`` (tiles per call) and ``map``
    (``run`` over several batches, results in order, e.g. concurrently, with an optional
    ``close`` that drops calls not yet started; see :func:`run_all`)."""

    name: str
    #: what really runs (e.g. the execution provider), for logs and --json summaries
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def run_all(session: Session, batches: Iterable) -> Iterator:
    """The session's outputs for ``batches`` in order, concurrently where the session can."""
    many = getattr(session, "map", None)
    return many(batches) if many else map(session.run, batches)


def prepare(bundle: Bundle, backend: str = "auto") -> Session:
    """Open the bundle's model on ``backend``; ``auto`` prefers a TensorRT engine built for
    this GPU, then ONNX on CUDA, then Keras on a JAX GPU, then ONNX on CPU, then Keras."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = _auto(bundle)
        logger.info("backend auto -> %s", backend)
    if backend == "trt":
        from lulc.runtime.backends.trt import open_bundle_engine

        return open_bundle_engine(bundle)
    if backend == "onnx":
        from lulc.runtime.backends.ort import OrtSession

        return OrtSession(bundle)
    from lulc.runtime.backends.keras_backend import KerasSession

    return KerasSession(bundle)


def _auto(bundle: Bundle) -> str:
    from lulc.runtime.backends import keras_backend, ort, trt

    if trt.usable(bundle):
        return "trt"
    onnx = bundle.has("onnx")
    if onnx and ort.CUDA in ort.available_providers():
        return "onnx"
    if bundle.has("keras") and keras_backend.on_jax_gpu():
        return "keras"
    return "onnx" if onnx else "keras"
