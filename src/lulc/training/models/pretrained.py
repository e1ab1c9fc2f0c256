"""keras.applications backbones with weights from a *local* file, adapted to any band count.

No code path downloads weights: backbones are always built with ``weights=None`` and a
``--weights FILE`` (ImageNet Keras ``.h5`` / ``.weights.h5`` for the backbone without top) is
loaded into a 3-band twin first. For other band counts the first convolution is adapted as
in the EuroSAT 13-band fine-tuning: the red, green and blue kernels go to the bands named
as such, and every other band gets their mean, so the pretrained filters still respond to
brightness and texture in the bands ImageNet never saw.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from lulc.runtime.core.errors import LulcError

#: ImageNet kernels are in R, G, B order; band names that mean each (Sentinel-2 and plain)
RGB_NAMES = (("b04", "red"), ("b03", "green"), ("b02", "blue"))


def rgb_positions(bands: list[str] | None, channels: int) -> list[int]:
    """Channel index of red, green and blue in ``bands``; a 3-channel input of unnamed bands is RGB."""
    lowered = [b.lower() for b in bands or []]
    found = [next((lowered.index(n) for n in names if n in lowered), None) for names in RGB_NAMES]
    if None not in found:
        return found
    if channels == 3:
        return [0, 1, 2]
    raise LulcError(
        f"cannot map 3-band (RGB) weights onto bands {', '.join(bands or [])}: none is named "
        "B04/B03/B02 or red/green/blue; name the raster's bands or train without --weights"
    )


def adapt_kernel(kernel: np.ndarray, channels: int, rgb: list[int]) -> np.ndarray:
    """(k, k, 3, F) RGB kernel -> (k, k, channels, F): RGB copied to their bands, the mean elsewhere."""
    out = np.repeat(kernel.mean(axis=2, keepdims=True), channels, axis=2)
    for src, dst in enumerate(rgb):
        out[:, :, dst, :] = kernel[:, :, src, :]
    return out


def transfer_weights(source: keras.Model, target: keras.Model, rgb: list[int]) -> None:
    """Copy every weight of ``source`` into ``target``, adapting the first convolution's kernel.

    The first conv is adapted even for 3 bands, because a B02, B03, B04 raster is BGR.
    """
    channels = target.input_shape[-1]
    first_conv = True
    for src_layer, dst_layer in zip(source.layers, target.layers):
        values = []
        for w in src_layer.get_weights():
            if first_conv and w.ndim == 4:
                w, first_conv = adapt_kernel(w, channels, rgb), False
            values.append(w)
        dst_layer.set_weights(values)


def load_weights_file(model: keras.Model, path: str) -> None:
    if not Path(path).is_file():
        raise LulcError(f"--weights {path} not found (lulc never downloads weights: pass a local file)")
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a wrong or corrupt file
        raise LulcError(f"cannot load --weights {path} into {model.name} without top: {exc}") from None


def pretrained_backbone(factory: Callable, channels: int, bands: list[str] | None, weights: str | None,
                        freeze: bool) -> tuple:
    """(inputs, features) of a ``factory`` backbone on ``channels`` bands, optionally pretrained.

    ``freeze`` makes the backbone non-trainable (its batch norms then run in inference
    mode), the first phase of fine-tuning.
    """
    with warnings.catch_warnings():
        # keras.applications warns about "1 or 3 input channels": any band count is the point here
        warnings.filterwarnings("ignore", message=".*input channels", category=UserWarning)
        backbone = factory(include_top=False, weights=None, input_shape=(None, None, channels))
    if weights:
        source = factory(include_top=False, weights=None, input_shape=(None, None, 3))
        load_weights_file(source, weights)
        transfer_weights(source, backbone, rgb_positions(bands, channels))
    backbone.trainable = not freeze
    inputs = keras.Input((None, None, channels), name="bands")
    return inputs, backbone(inputs)
