"""Recurrent cells unrolled over a fixed number of dates, written with plain Keras layers and ops.

Why not ``keras.layers.LSTM``/``ConvLSTM2D``: their ONNX forms (a fused LSTM op, or a
``Loop``) are what TensorRT and TF.js handle worst, and their masks are per sequence, not
per pixel, while clouds hide single pixels on single dates. Unrolling by hand over the
bundle's fixed T gives plain Conv/Mul/Add graphs that every exporter converts, keeps the
spatial axes dynamic, and lets each pixel skip the dates it did not observe.

Input convention of every temporal model: (N, H, W, T * C) z-scored bands in date-major
order, **NaN where a date was not observed** (cloud, gap, nodata). :func:`split_dates` turns
that into T zero-filled (N, H, W, C) frames plus (N, H, W, 1) masks; a cell's state is only
updated where the mask is 1, so a missing date is skipped, never read as a zero reflectance.
"""
from __future__ import annotations

from keras import layers, ops

#: how the bundle records the recurrence (provenance.temporal.recurrence)
RECURRENCE = "cells unrolled over fixed T with Conv2D gates; per-pixel masked state updates"
#: how the bundle records missing dates (provenance.temporal.missing_dates)
MISSING_DATES = "NaN in the input channels of that date; the model masks them (state carried over)"


def split_dates(inputs, time_steps: int, bands: int) -> tuple[list, list]:
    """(N, H, W, T*C) with NaN gaps -> T frames (N, H, W, C) zero-filled and T masks (N, H, W, 1)."""
    frames, masks = [], []
    for t in range(time_steps):
        raw = inputs[..., t * bands : (t + 1) * bands]
        gap = ops.isnan(raw)
        masks.append(1.0 - ops.cast(ops.any(gap, axis=-1, keepdims=True), "float32"))
        frames.append(ops.where(gap, 0.0, raw))
    return frames, masks


class ConvCell:
    """One ConvLSTM or ConvGRU cell whose layers are shared by every date it is applied to.

    ``kernel=1`` makes it a per-pixel LSTM/GRU (no spatial context), ``kernel=3`` the
    MTLCC encoder cell. The input and recurrent convolutions are separate layers so the
    first step, which has no state yet, needs no zero tensor of unknown spatial size.
    """

    def __init__(self, kind: str, filters: int, kernel: int, name: str):
        if kind not in ("lstm", "gru"):
            raise ValueError(f"cell must be lstm or gru, not {kind!r}")
        gates = 4 if kind == "lstm" else 3
        self.kind, self.filters = kind, filters
        self.conv_x = layers.Conv2D(gates * filters, kernel, padding="same", name=f"{name}_x")
        self.conv_h = layers.Conv2D(gates * filters, kernel, padding="same", use_bias=False, name=f"{name}_h")

    def step(self, x, mask, state):
        """One date: returns the new state (h, c) or (h,), kept where ``mask`` is 0."""
        zx = self.conv_x(x)
        if self.kind == "lstm":
            z = zx if state is None else zx + self.conv_h(state[0])
            i, f, g, o = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(i) * ops.tanh(g)
            if state is not None:
                c = c + ops.sigmoid(f) * state[1]
            new = (ops.sigmoid(o) * ops.tanh(c), c)
        else:
            xz, xr, xn = ops.split(zx, 3, axis=-1)
            if state is None:
                z, n = ops.sigmoid(xz), ops.tanh(xn)
                new = ((1.0 - z) * n,)
            else:
                hz, hr, hn = ops.split(self.conv_h(state[0]), 3, axis=-1)
                z, r = ops.sigmoid(xz + hz), ops.sigmoid(xr + hr)
                n = ops.tanh(xn + r * hn)
                new = ((1.0 - z) * n + z * state[0],)
        if state is None:
            return tuple(mask * s for s in new)
        return tuple(mask * s + (1.0 - mask) * p for s, p in zip(new, state))


def run_cell(cell: ConvCell, frames: list, masks: list, reverse: bool = False) -> list:
    """Hidden state after each date (in date order), scanning backwards when ``reverse``.

    The last element of a forward run (first of a reverse run) is the final state: the
    summary of all dates the pixel observed.
    """
    order = range(len(frames) - 1, -1, -1) if reverse else range(len(frames))
    state, out = None, [None] * len(frames)
    for t in order:
        state = cell.step(frames[t], masks[t], state)
        out[t] = state[0]
    return out


def bidirectional_final(kind: str, filters: int, kernel: int, frames: list, masks: list, name: str,
                        bidirectional: bool = True) -> list:
    """Final states of a forward (and a backward) scan: [h_fw] or [h_fw, h_bw]."""
    finals = [run_cell(ConvCell(kind, filters, kernel, f"{name}_fw"), frames, masks)[-1]]
    if bidirectional:
        finals.append(run_cell(ConvCell(kind, filters, kernel, f"{name}_bw"), frames, masks, reverse=True)[0])
    return finals
