"""ONNX export with tf2onnx and a parity gate run in onnxruntime.

Keras 3 converts reliably only with an explicit input signature (see shared STACK notes);
the batch axis stays dynamic (and H/W for fully convolutional nets) so the runtime can
batch tiles of any size that respects the bundle's divisor.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lulc.export.parity import compare, gate
from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import ParityError

logger = logging.getLogger(__name__)

OPSET = 17
#: fp32 ONNX must match Keras to float rounding: 1e-4 on probabilities catches any wrong op
FP32_TOLERANCE = 1e-4


def keras_reference(bundle: Bundle):
    """The bundle's Keras model and its probabilities on the stored sample tiles."""
    from lulc.runtime.backends.keras_backend import load_keras_model

    model = load_keras_model(bundle)
    samples = bundle.load_samples()
    return model, samples, np.asarray(model(samples, training=False), dtype=np.float32)


def convert(model, path: Path, opset: int = OPSET) -> None:
    """Write ``model`` as ONNX with a dynamic batch (and spatial) axis."""
    import tensorflow as tf
    import tf2onnx

    shape = (None, *model.input_shape[1:])
    spec = [tf.TensorSpec(shape, tf.float32, name="bands")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))


def run_onnx(path: Path, samples: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: samples})[0]


def export_onnx(bundle: Bundle, opset: int = OPSET) -> dict:
    """Convert, check parity on the bundle's sample tiles, then record ``model.onnx``."""
    model, samples, reference = keras_reference(bundle)
    staged = bundle.root / ".model.onnx.partial"
    try:
        convert(model, staged, opset)
        try:
            candidate = run_onnx(staged, samples)
        except Exception as exc:  # onnxruntime raises untyped errors for invalid graphs
            raise ParityError(f"ONNX export refused: onnxruntime cannot run the converted model: {exc}") from exc
        figures = compare(reference, candidate)
        gate(figures, "ONNX", max_abs_diff=FP32_TOLERANCE)
        figures["tolerance"] = FP32_TOLERANCE
        bundle.add_artifact("onnx", staged, "onnx", parity=figures, dest="model.onnx",
                            details={"opset": opset, "dynamic_axes": ["batch", "height", "width"]})
    finally:
        staged.unlink(missing_ok=True)
    logger.info("ONNX parity: %s", figures)
    return figures
