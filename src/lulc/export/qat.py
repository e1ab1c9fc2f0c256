"""Quantisation-aware fine-tuning (QAT): an int8 model with *every* convolution int8.

Post-training quantisation (int8.py) has to keep the sample U-Net's full-resolution
convolutions in float to pass the gate, and those are where the time goes. QAT lets the
weights adapt to int8 instead: the trained Keras model is fine-tuned for a few epochs with
int8 rounding in its forward pass (fake quantisation with straight-through gradients) where
onnxruntime will put it:

* weights: symmetric per-output-channel int8 (batch normalisation, frozen, scales each output
  channel, so the rounding is the same before and after it is folded into the convolution);
* inputs of every convolution and dense layer: symmetric per-tensor int8, at ranges measured
  on the training split at the calibration percentile (fixed while fine-tuning).

The target is the fp32 model itself (distillation: cross-entropy to its probabilities on the
valid pixels of the training split), because what the gate asks is that int8 keeps fp32's
class; no labels are used. The fine-tuned weights are then exported to ONNX and quantised by
onnxruntime with no node left in float, calibrated on train, the percentile chosen on val,
and gated on test against the bundle's own fp32 ONNX exactly like a post-training model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lulc.export import int8
from lulc.export.onnx import convert
from lulc.export.parity import probabilities
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import ParityError

if TYPE_CHECKING:
    import keras

#: fine-tuning learning rate (Adam): a tenth of training's default, the weights only adapt
LEARNING_RATE = 1e-4
BATCH = 8
#: tiles whose activations set the fixed input ranges (every value of each is kept at once)
RANGE_TILES = 32
#: percentile of |input| that sets each layer's fake-quantisation range while fine-tuning
RANGE_PERCENTILE = 99.99


def _round_weights(w, axis: int):
    """Per-channel symmetric int8 rounding of ``w`` along output ``axis``, identity gradient."""
    from keras import ops

    axes = [a for a in range(len(w.shape)) if a != axis % len(w.shape)]
    scale = ops.stop_gradient(ops.maximum(ops.max(ops.abs(w), axis=axes, keepdims=True), 1e-12) / 127.0)
    return w + ops.stop_gradient(ops.round(w / scale) * scale - w)


def _round_inputs(x, amax: float):
    """Per-tensor symmetric int8 rounding clipped at ``amax``, identity gradient."""
    from keras import ops

    scale = max(amax, 1e-12) / 127.0
    return x + ops.stop_gradient(ops.clip(ops.round(x / scale), -127.0, 127.0) * scale - x)


def _quantized(layer_type: type, out_axis: int) -> type:
    """``layer_type`` whose kernel and input pass through int8 rounding (same weights, same
    config, so the fine-tuned weights load back into the plain model one for one)."""
    class Quantized(layer_type):  # type: ignore[misc, valid-type]
        input_amax = 1.0

        @property
        def kernel(self):
            return _round_weights(self._kernel, out_axis)

        @kernel.setter
        def kernel(self, value):
            self._kernel = value

        def call(self, inputs):
            return super().call(_round_inputs(inputs, self.input_amax))

    Quantized.__name__ = f"Quantized{layer_type.__name__}"
    return Quantized


def _fake_quantized(model: keras.Model, amax: dict[str, float]) -> keras.Model:
    """A clone of ``model`` with every convolution and dense layer fake-quantised, batch
    normalisation frozen, and ``model``'s weights."""
    import keras
    from keras import layers

    axes = {layers.Conv2D: -1, layers.Conv2DTranspose: -2, layers.Dense: -1}
    kinds = {t: _quantized(t, axis) for t, axis in axes.items()}

    def clone(layer):
        kind = kinds.get(type(layer))
        new = (kind or type(layer)).from_config(layer.get_config())
        if kind:
            new.input_amax = amax[layer.name]
        if isinstance(layer, layers.BatchNormalization):
            new.trainable = False  # inference mode: the fp32 statistics that export folds
        return new

    clone_ = keras.models.clone_model(model, clone_function=clone)
    clone_.set_weights(model.get_weights())
    return clone_


def input_ranges(model: keras.Model, tiles: np.ndarray) -> dict[str, float]:
    """Each convolution / dense layer's input range (|x| at RANGE_PERCENTILE) on ``tiles``."""
    import keras
    from keras import layers

    names = [lyr.name for lyr in model.layers if type(lyr) in (layers.Conv2D, layers.Conv2DTranspose, layers.Dense)]
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
    outs = probe.predict(tiles[:RANGE_TILES], batch_size=BATCH, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: float(np.percentile(np.abs(o), RANGE_PERCENTILE)) for n, o in zip(names, outs)}


def _distillation_loss(target, probs):
    """Cross-entropy to the fp32 probabilities on valid pixels (last channel of ``target``)."""
    from keras import ops

    teacher, valid = target[..., :-1], target[..., -1]
    ce = -ops.sum(teacher * ops.log(ops.clip(probs, 1e-7, 1.0)), axis=-1)
    return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


def fine_tune(model: keras.Model, train: int8.Split, epochs: int, seed: int) -> dict:
    """Fine-tune ``model`` in place with int8 fake quantisation; returns what was done."""
    import keras

    keras.utils.set_random_seed(seed)
    teacher = np.asarray(model.predict(train.x, batch_size=BATCH, verbose=0), dtype=np.float32)
    valid = train.valid if teacher.ndim == 4 else train.valid.any(axis=(1, 2))
    target = np.concatenate([teacher, valid[..., None].astype(np.float32)], axis=-1)
    amax = input_ranges(model, train.x)
    student = _fake_quantized(model, amax)
    student.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=_distillation_loss)
    history = student.fit(train.x, target, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    model.set_weights(student.get_weights())
    return {"epochs": epochs, "learning_rate": LEARNING_RATE, "batch_size": BATCH, "seed": seed,
            "split": "train", "tiles": int(len(train.x)), "target": "fp32 probabilities (distillation), valid pixels",
            "input_range_percentile": RANGE_PERCENTILE, "loss_first_last": [round(float(v), 6) for v in
                                                                           history.history["loss"][:: max(epochs - 1, 1)]]}


def export_qat(bundle: Bundle, epochs: int) -> dict[str, dict]:
    """Fine-tune, quantise every node and gate; record ``onnx-int8`` and return its figures.
    A miss is a one-line ParityError and writes nothing, so the caller can fall back."""
    from lulc.runtime.backends.keras_backend import load_keras_model

    fp32, m = bundle.artifact_path("onnx"), bundle.manifest
    seed, splits, calibration = int8.gate_inputs(bundle, fp32)
    val, test = splits["val"], splits["test"]
    model = load_keras_model(bundle)
    qat = fine_tune(model, splits["train"], epochs, seed)
    with tempfile.TemporaryDirectory(prefix="lulc-qat-") as tmp:
        tuned = Path(tmp) / "tuned.onnx"
        convert(model, tuned)
        q = int8.Quantizer(tuned, Path(tmp))
        percentile, tried = int8.choose_percentile(q, calibration, val, m.task, m.ignore_index)
        candidate = q.quantize(percentile)
        figures = int8.measure(test, probabilities(candidate, test.x), m.task, m.ignore_index)
        if not int8.passes(figures):
            raise ParityError(f"after {epochs} QAT epoch{'s' * (epochs != 1)}: {int8.refusal(figures, 0, len(q.nodes))}")
        probe = int8.speed_probe(seed, m.tile.size, calibration.shape[-1])
        details = int8.quantization_details(fp32, candidate, calibration, percentile, seed, tried,
                                            tried[str(percentile)], probe)
        details.update(method="qat", qat=qat, float_nodes=[], float_for_speed=[], float_for_agreement=[],
                       quantized_nodes=len(q.nodes))
        return int8.record(bundle, candidate, figures, details)
