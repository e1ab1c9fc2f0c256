"""A scene bundle's patch classifier at every N px in one pass (``lulc-infer --scene-stride N``).

The scene head (``training/models/scene_head.py``) pools the backbone over patch-sized
cells, so on a tile it classifies one cell per patch. For a class per N-px cell the
patch window has to slide by N px, and the backbone's own strides (2 per pooling) stand
in the way below N. The OverFeat / à-trous answer, done here without touching a layer:
at each downsampling layer that would take the stride past N, the layer runs on every
phase of its input (as if the input were shifted by 0..s-1 px in y and x: its stride-1
twin, padded as it pads, then a space-to-batch) and the phases are stacked in the batch
axis. Every later layer runs unchanged on that batch, so padding, pooling and weights are
exactly the trained ones; the patch-sized average pool then slides by
one feature px, the dense head acts per position (a 1 x 1 convolution), and the phases
are interleaved back into the N-px grid. Cell ``k`` gets the window that starts at
``k*N - shift``, the most centred the N-px grid allows, and its class is repeated over the
cell's N x N px so the output is shaped like a segmenter's.

Each output equals the trained model run on that window with its context (what the
runtime computes today for stride = patch): the window's features see real neighbours
wherever ``context`` px around the cell lie inside the tile; ``context_px`` bounds that.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lulc.export.onnx import FP16_AGREEMENT, FP32_TOLERANCE, OPSET, convert, run_onnx, simplify_if_faithful
from lulc.export.parity import predict, staging, verify_and_record
from lulc.runtime.backends.scene_stride import stride_artifact
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError, SettingError


@dataclass(frozen=True)
class SceneGeometry:
    """Where the windows sit for one stride: all in input px."""

    patch: int  # window size, the trained patch
    backbone_stride: int
    stride: int  # N: one class per N x N px cell
    shift: int  # window of cell k starts at k*N - shift
    receptive: int  # the backbone's receptive-field span beyond one px, along its longest path

    @property
    def context_px(self) -> int:
        """Px a cell must lie from the tile edge for its window and the window's receptive
        field to be inside the tile; closer cells see the tile's zero padding."""
        return self.patch + self.receptive


def _strides(layer) -> int:
    strides = getattr(layer, "strides", None)
    if strides is None:
        return 1
    strides = tuple(np.atleast_1d(strides))
    if len(set(strides)) != 1:
        raise LulcError(f"--scene-stride needs square strides; layer {layer.name} has {strides}")
    return int(strides[0])


def _kernel(layer) -> int:
    """The layer's spatial extent in its input's px (a dilated kernel spans more)."""
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None) or (1,)
    dilation = getattr(layer, "dilation_rate", None) or (1,)
    return (int(np.atleast_1d(size)[0]) - 1) * int(np.atleast_1d(dilation)[0]) + 1


def _backbone(model):
    """The part of the scene model before its head (the head's layer names are fixed)."""
    import keras

    first = "cell_pool" if "cell_pool" in [layer.name for layer in model.layers] else "cell_dense"
    return keras.Model(model.inputs, model.get_layer(first).input)


@dataclass(frozen=True)
class _State:
    """What a tensor of the rewritten backbone is, relative to the input."""

    folds: tuple[int, ...] = ()  # strides whose phases are stacked in the batch axis
    real: int = 1  # stride each phase image still has
    receptive: int = 0  # receptive-field span beyond one px, along the longest path


class _Folder:
    """Runs a functional graph, stacking the phases of each downsampling layer past ``stride``
    in the batch axis, and follows every tensor's :class:`_State`."""

    def __init__(self, stride: int):
        self.stride = stride
        self.states: dict[int, tuple[_State, Any]] = {}  # id(tensor) -> state, tensor (keeps ids unique)

    def state(self, tensors) -> _State:
        states = [self.states[id(t)][0] if id(t) in self.states else _State() for t in tensors]
        if len({(st.folds, st.real) for st in states}) != 1:
            raise LulcError("--scene-stride: branches of this backbone join at different strides")
        return max(states, key=lambda st: st.receptive)

    def run(self, model, x):
        return model._run_through_graph([x], operation_fn=self.wrap)

    def wrap(self, op):
        import keras

        def call(*args, **kwargs):
            graph = getattr(op, "_functional", None) or op  # a Sequential runs through its own graph
            if hasattr(graph, "_run_through_graph"):  # a nested model: walk its layers too
                return self.run(graph, args[0])
            state = self.state([t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)])
            s = _strides(op)
            down = state.real * int(np.prod(state.folds))
            receptive = state.receptive + (_kernel(op) - 1) * down
            kwargs.pop("training", None)
            if s > 1 and state.real * s > self.stride:
                out = _at_every_phase(op, args[0], s)
                state = _State((*state.folds, s), state.real, receptive)
            else:
                out = op(*args, **kwargs)
                state = _State(state.folds, state.real * s, receptive)
            for t in keras.tree.flatten(out):
                self.states[id(t)] = (state, t)
            return out

        return call


def _at_every_phase(op, x, s: int):
    """``op`` (stride ``s``) run at each of the s*s phases of ``x``, phases stacked in the batch
    axis ((dy, dx) = dy*s + dx outermost): its stride-1 twin, padded the way ``op`` pads,
    computes every phase at once, then each phase's samples are gathered."""
    from keras import layers

    k = _kernel(op)
    before = max(k - s, 0) // 2 if op.get_config().get("padding") == "same" else 0
    padded = layers.ZeroPadding2D(((before, k - 1 - before),) * 2, name=f"{op.name}_phase_pad")(x)
    config = {**op.get_config(), "strides": 1, "padding": "valid", "name": f"{op.name}_every_phase"}
    twin = type(op).from_config(config)
    out = twin(padded)
    twin.set_weights(op.get_weights())
    return _custom_layers()[0](s, name=f"{op.name}_phases")(out)


def _interleave(x, folds: tuple[int, ...]):
    """Undo the folding: (prod(s*s) * B, h, w, K) -> (B, h * prod(s), w * prod(s), K)."""
    from keras import ops

    if not folds:
        return x
    shape = ops.shape(x)
    n = len(folds)
    # batch axis is (dy_n, dx_n, ..., dy_1, dx_1, b): the last fold is outermost
    split = [s for f in reversed(folds) for s in (f, f)]
    x = ops.reshape(x, (*split, -1, shape[1], shape[2], shape[3]))
    # a position y = ((j * s_n + dy_n) * s_{n-1} + dy_{n-1}) ... + dy_1: j, then dy_n first
    b, j, i, k = 2 * n, 2 * n + 1, 2 * n + 2, 2 * n + 3
    x = ops.transpose(x, (b, j, *range(0, 2 * n, 2), i, *range(1, 2 * n, 2), k))
    total = int(np.prod(folds))
    return ops.reshape(x, (-1, shape[1] * total, shape[2] * total, shape[3]))


@functools.cache
def _custom_layers() -> tuple[type, type]:
    """The two layers the rewrite adds (built on first use: keras is an export-time import);
    both need the traced, dynamic H and W."""
    import keras
    from keras import ops

    class SpaceToBatch(keras.layers.Layer):
        """(B, H, W, C) -> (s*s*B, H/s, W/s, C), phase (dy, dx) = dy*s + dx outermost."""

        def __init__(self, s: int, **kwargs):
            super().__init__(**kwargs)
            self.s = s

        def call(self, x):
            s, shape = self.s, ops.shape(x)
            x = ops.reshape(x, (-1, shape[1] // s, s, shape[2] // s, s, shape[3]))
            x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
            return ops.reshape(x, (-1, shape[1] // s, shape[2] // s, shape[3]))

    class WindowsToCells(keras.layers.Layer):
        """Interleaves the phases and places each window on its cell."""

        def __init__(self, folds: tuple[int, ...], geo: SceneGeometry, **kwargs):
            super().__init__(**kwargs)
            self.folds, self.geo = folds, geo

        def call(self, x, bands):
            geo, n = self.geo, self.geo.stride
            x = _interleave(x, self.folds)
            # cell k holds the window starting at k*N - shift; cut to the tile's H/N x W/N
            before = geo.shift // n
            after = max((geo.patch - max(geo.backbone_stride, n)) // n - before, 0)
            x = ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
            size = ops.shape(bands)
            return x[:, : size[1] // n, : size[2] // n, :]

    return SpaceToBatch, WindowsToCells


def strided_model(model, stride: int):
    """The scene ``model`` rewritten to give one class per ``stride`` px, and where its windows
    sit (see the module doc)."""
    import keras
    from keras import layers

    patch = int(np.atleast_1d(model.get_layer("probs").size)[0])
    inputs = keras.Input(model.input_shape[1:], name="bands")
    folder = _Folder(stride)
    features = folder.run(_backbone(model), inputs)
    state = folder.state([features])
    down = state.real * int(np.prod(state.folds))
    if patch % stride or state.real != min(stride, down) or stride % state.real:
        raise LulcError(f"--scene-stride {stride} does not fit this {model.name}: it must divide the patch "
                        f"({patch} px) and be a power of 2 up to the backbone's stride {down}, or a multiple of it")
    geo = SceneGeometry(patch, down, stride, stride * ((patch // stride - 1) // 2), state.receptive)
    x = features
    if "cell_pool" in [layer.name for layer in model.layers]:
        x = layers.AveragePooling2D(patch // down, strides=max(stride // down, 1), name="window_pool")(x)
    x = model.get_layer("cell_probs")(model.get_layer("cell_dense")(x))
    x = _custom_layers()[1](state.folds, geo, name="window_cells")(x, inputs)
    if stride > 1:
        x = layers.UpSampling2D(stride, interpolation="nearest", name="cell_repeat")(x)
    return keras.Model(inputs, x, name=f"{model.name}_stride{stride}"), geo


#: the reference windows carry this much context at most (in patches): a DenseNet's receptive
#: field spans ~2000 px, more than any tile, so beyond it the gate judges classes, not rounding
MAX_CONTEXT_PATCHES = 8
#: windows compared per export
WINDOWS = 64


def check_scene_bundle(bundle: Bundle, stride: int) -> None:
    """What the manifest alone can tell, before any export work (the backbone's strides are
    checked once the model is loaded)."""
    m = bundle.manifest
    if m.task != "scene":
        raise SettingError("--scene-stride", f"is for scene bundles; {bundle.root} holds a {m.task} model ({m.architecture})")
    if m.tile.divisor % stride:
        raise SettingError("--scene-stride", f"{stride} must divide the bundle's {m.tile.divisor} px patch")


def export_scene_stride(bundle: Bundle, stride: int, opset: int = OPSET, seed: int = 0) -> dict[str, dict]:
    """Write ``model.strideN.onnx``: the scene model at one class per ``stride`` px, gated on
    windows of a mosaic of the bundle's sample patches against the trained model run on each
    window (with its context) one by one, the seed's way."""
    check_scene_bundle(bundle, stride)
    from lulc.runtime.backends.keras_backend import load_keras_model

    model, samples = load_keras_model(bundle), bundle.load_samples()
    strided, geo = strided_model(model, stride)
    margin = min(-(-geo.receptive // geo.patch), MAX_CONTEXT_PATCHES) * geo.patch
    canvas = mosaic(samples, 2 * margin + 4 * geo.patch)
    starts = np.random.default_rng(seed).integers(0, 3 * geo.patch // stride + 1, (WINDOWS, 2)) * stride + margin
    # one window at a time: a VGG16 window with its context is 480 px, and 64 at once need ~20 GB
    reference = np.concatenate([
        predict(model, canvas[:, y - margin: y + geo.patch + margin, x - margin: x + geo.patch + margin])[:, margin, margin]
        for y, x in starts])

    def windows(path: Path) -> np.ndarray:
        probs = run_onnx(path, canvas)[0]
        return np.stack([probs[y + geo.shift, x + geo.shift] for y, x in starts])

    name = stride_artifact(stride)
    truncated = margin < geo.receptive
    details = {"opset": opset, "dynamic_axes": ["batch", "height", "width"], "precision": "fp32", "stride": stride,
               "patch": geo.patch, "shift": geo.shift, "backbone_stride": geo.backbone_stride,
               "receptive_px": geo.receptive, "context_px": geo.context_px, "reference_context_px": margin}
    with staging(bundle.root / f".model.stride{stride}.onnx.partial") as staged:
        details["softmax_expanded"] = convert(strided, staged, opset)
        # the slimmed graph must give what the converted one gives (the gate then judges both
        # against the windows); TensorFlow's own run of the rewrite would need twice the memory
        details["simplified"] = simplify_if_faithful(staged, canvas, run_onnx(staged, canvas))
        figures = verify_and_record(
            bundle, name, staged, reference, windows, f"--scene-stride {stride}", fmt="onnx",
            dest=f"model.stride{stride}.onnx", details=details,
            max_abs_diff=None if truncated else FP32_TOLERANCE, min_agreement=FP16_AGREEMENT if truncated else None)
    return {name: figures}


def mosaic(samples: np.ndarray, side: int) -> np.ndarray:
    """A (1, side, side, C) canvas of the sample patches side by side, cycled as needed: the
    rewrite must be exact on any input, seams included."""
    n, h, w, c = samples.shape
    rows, cols = -(-side // h), -(-side // w)
    order = np.arange(rows * cols) % n
    grid = samples[order].reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
    return np.ascontiguousarray(grid[None, :side, :side])
