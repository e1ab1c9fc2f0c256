"""ONNX export with tf2onnx, an onnxslim pass and parity gates run in onnxruntime.

Keras 3 converts reliably only with an explicit input signature (see shared STACK notes);
the batch axis stays dynamic (and H/W for fully convolutional nets) so the runtime can
batch tiles of any size that respects the bundle's divisor.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from lulc.export.layout import export_channels_first
from lulc.export.parity import compare, keras_reference, probabilities, staging, verify_and_record
from lulc.export.softmax import expand_softmax
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import ParityError

__all__ = ["convert", "export_onnx", "keras_reference", "run_onnx", "to_fp16"]

logger = logging.getLogger(__name__)

OPSET = 17
#: fp32 ONNX must match Keras to float rounding: 1e-4 on probabilities catches any wrong op
FP32_TOLERANCE = 1e-4
#: fp16 weights shift probabilities by ~1e-3, so judge the map itself: the class per pixel
FP16_AGREEMENT = 0.995


def convert(model, path: Path, opset: int = OPSET, spatial: tuple[int, int] | None = None) -> int:
    """Write ``model`` as ONNX with a dynamic batch axis; H/W fixed to ``spatial`` if given.
    Returns how many class-axis softmaxes were written out as elementwise ops (see
    :mod:`lulc.export.softmax`).

    A fixed H/W graph is what TensorRT optimises best; the runtime's ONNX keeps them dynamic.
    """
    import tensorflow as tf
    import tf2onnx

    hw = spatial or model.input_shape[1:3]
    spec = [tf.TensorSpec((None, *hw, model.input_shape[-1]), tf.float32, name="bands")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
    return expand_softmax(path)


def run_onnx(path: Path, samples: np.ndarray) -> np.ndarray:
    """:func:`~lulc.export.parity.probabilities`, with a graph onnxruntime cannot run refused in one line."""
    try:
        return probabilities(path, samples).astype(np.float32)
    except Exception as exc:  # onnxruntime raises untyped errors for invalid graphs
        raise ParityError(f"ONNX export refused: onnxruntime cannot run the converted model: {exc}") from exc


def simplify_if_faithful(path: Path, samples: np.ndarray, reference: np.ndarray) -> bool:
    """Replace ``path`` by its onnxslim version only if that still matches Keras.

    Simplification folds constants and fuses ops; a bug there must cost us the
    simplification, never correctness, so the slimmed graph is gated like any export.
    """
    import onnxslim

    slim = path.with_name(path.name + ".slim.partial")
    with staging(slim):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # onnxslim prints a summary table
                onnxslim.slim(str(path), str(slim))
            figures = compare(reference, run_onnx(slim, samples))
        except Exception as exc:  # onnxslim raises whatever its passes raise; ParityError included
            logger.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
            return False
        if figures["max_abs_diff"] > FP32_TOLERANCE:
            logger.warning("onnxslim changed the outputs by %.3g; keeping the unsimplified graph", figures["max_abs_diff"])
            return False
        os.replace(slim, path)
    return True


def to_fp16(src: Path, dst: Path) -> None:
    """Half-precision weights and activations; inputs and outputs stay float32 so every
    consumer feeds the same normalised tiles whatever the precision."""
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # one warning per tiny weight flushed to fp16's range
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def export_onnx(bundle: Bundle, opset: int = OPSET, fp16: bool = False, simplify: bool = True) -> dict[str, dict]:
    """Convert, simplify, check parity on the bundle's sample tiles, then record ``model.onnx``
    (and ``model.fp16.onnx``). Returns the parity figures per recorded artefact."""
    model, samples, reference = keras_reference(bundle)
    run = functools.partial(run_onnx, samples=samples)
    results = {}
    with staging(bundle.root / ".model.onnx.partial") as staged:
        expanded = convert(model, staged, opset)
        details = {"opset": opset, "dynamic_axes": ["batch", "height", "width"], "precision": "fp32",
                   "softmax_expanded": expanded, "simplified": simplify and simplify_if_faithful(staged, samples, reference)}
        results["onnx"] = verify_and_record(bundle, "onnx", staged, reference, run, "ONNX", fmt="onnx",
                                            dest="model.onnx", details=details, max_abs_diff=FP32_TOLERANCE)
    twin = export_channels_first(bundle, "onnx") if bundle.manifest.task in ("segmentation", "scene") else None
    if twin:
        results["onnx-nchw"] = twin
    if fp16:
        with staging(bundle.root / ".model.fp16.onnx.partial") as staged:
            to_fp16(bundle.artifact_path("onnx"), staged)
            results["onnx-fp16"] = verify_and_record(
                bundle, "onnx-fp16", staged, reference, run, "ONNX fp16", fmt="onnx", dest="model.fp16.onnx",
                details={**details, "precision": "fp16", "io_dtype": "float32"}, min_agreement=FP16_AGREEMENT)
    return results
