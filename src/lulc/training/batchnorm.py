"""Batch-normalisation statistics that match the trained weights ("precise BN").

In training mode a BatchNormalization layer normalises with the batch's own statistics and
only nudges its moving mean and variance (momentum 0.99); in inference mode — validation,
export, ``lulc-infer`` — it uses those moving values. After a short run (45 steps leave
0.99**45 = 64 % of the initial mean 0 / variance 1 in them) they do not describe the
activations of the current weights, and the model in inference mode is a different, often
useless, model: 0.80 training accuracy against 0.15 test accuracy on a 3-epoch run.

So before every validation (and hence before every checkpoint) each trainable BN layer's
moving statistics are replaced by the population mean and variance of its inputs over a
seeded sample of training tiles, run through the model in training mode as the optimiser
saw them. Training itself is unchanged; the moving statistics are only read at inference.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

#: training pixels per calibration (whole tiles; 128 tiles of 64 x 64 px): stable statistics
#: for a forward pass over a fraction of an epoch's tiles
CALIBRATION_PIXELS = 2**19
#: pixels per calibration batch (at least twice the training batch): a forward pass without
#: gradients needs far less memory than a training step, and few large batches run faster
BATCH_PIXELS = 2**16


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Trainable BN layers, nested models included (frozen ones keep their pretrained statistics)."""
    found: dict[int, keras.layers.BatchNormalization] = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.setdefault(id(layer), layer)
    return list(found.values())


def calibration_sample(x: np.ndarray, seed: int, pixels: int = CALIBRATION_PIXELS) -> np.ndarray:
    """A seeded subset of the (normalised) training tiles, in their original order."""
    size = max(1, pixels // (x.shape[1] * x.shape[2]))
    if len(x) <= size:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))]


class _Moments:
    """Pooled per-channel count, sum and sum of squares of one layer's inputs (float64)."""

    def __init__(self):
        self.n, self.s1, self.s2 = 0, 0.0, 0.0

    def add(self, inputs, axis: int) -> None:
        rank = len(inputs.shape)
        axes = [i for i in range(rank) if i != axis % rank]
        x = ops.cast(inputs, "float32")
        n = int(np.prod([inputs.shape[i] for i in axes]))
        mean = ops.convert_to_numpy(ops.mean(x, axis=axes)).astype(np.float64)
        square = ops.convert_to_numpy(ops.mean(ops.square(x), axis=axes)).astype(np.float64)
        self.n, self.s1, self.s2 = self.n + n, self.s1 + n * mean, self.s2 + n * square

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.s1 / self.n
        return mean, np.maximum(self.s2 / self.n - mean**2, 0.0)


def recalibrate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int) -> int:
    """Set the moving statistics of every trainable BN layer of ``model`` from ``x``; returns
    the number of layers set. A layer called several times per step (an encoder shared by
    all dates) pools all its calls, as its moving statistics did in training."""
    layers = batchnorm_layers(model)
    if not layers or not len(x):
        return 0
    moments = {id(layer): _Moments() for layer in layers}
    for layer in layers:
        def recording(inputs, training=None, mask=None, _layer=layer, _call=layer.call):
            moments[id(_layer)].add(inputs, _layer.axis)
            return _call(inputs, training=True, mask=mask)

        layer.call = recording  # an instance attribute, shadowing the class's method
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size], training=True)
    finally:
        for layer in layers:
            del layer.call
    for layer in layers:
        record = moments[id(layer)]
        if record.n:  # a layer the sample never reached keeps its statistics
            mean, variance = record.result()
            layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return len(layers)


class BatchNormCalibration(keras.callbacks.Callback):
    """Recalibrate BN statistics when an epoch's validation begins.

    Keras runs validation between the epoch's last step and ``on_epoch_end`` and calls
    ``on_test_begin`` of the fit's callbacks first, so validation metrics, early stopping and
    the checkpoints saved at ``on_epoch_end`` all see the model as it will be exported.
    """

    def __init__(self, x: np.ndarray, batch_size: int):
        super().__init__()
        self.x = x
        self.batch_size = max(2 * batch_size, BATCH_PIXELS // (x.shape[1] * x.shape[2]))

    def on_test_begin(self, logs: dict | None = None) -> None:
        recalibrate_batchnorm(self.model, self.x, self.batch_size)
