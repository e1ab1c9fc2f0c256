"""Numba CUDA twins of :mod:`lulc.runtime.kernels.cpu`, for device-resident blocks.

Same names, signatures and results as the CPU kernels; :func:`lulc.runtime.kernels.for_array`
picks this module for arrays exposing ``__cuda_array_interface__`` (Numba, CuPy, PyTorch,
JAX via DLPack), so a block crosses PCIe once each way: raw bands in, class bands out. Every
kernel maps one thread to one output element, so none needs atomics except the per-tile
valid-pixel count. CI runs them under ``NUMBA_ENABLE_CUDASIM=1`` against the CPU kernels.

The ``@cuda.jit`` kernel bodies stay unannotated (``noqa: ANN001``): they are device code, which
mypy leaves unchecked, because numba's intrinsics (``cuda.grid``) have no usable Python types.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import cuda

from lulc.runtime.kernels import cpu

#: a Numba (or CuPy, simulator) CUDA device array: no static type, anything exposing
#: ``__cuda_array_interface__``
DeviceArray = Any

_THREADS_2D = (16, 16)

_is_missing = cuda.jit(device=True)(cpu.missing)
_finalize_span = cuda.jit(device=True)(cpu.finalize_span)
_uncertainty_span = cuda.jit(device=True)(cpu.uncertainty_span)


def _grid_2d(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    ty, tx = _THREADS_2D
    return (math.ceil(w / tx), math.ceil(h / ty)), (tx, ty)


@cuda.jit
def _mask(block, nodata, use_nodata, valid):  # noqa: ANN001
    x, y = cuda.grid(2)
    if y >= valid.shape[0] or x >= valid.shape[1]:
        return
    ok = True
    for b in range(block.shape[0]):
        if _is_missing(block[b, y, x], nodata, use_nodata):
            ok = False
    valid[y, x] = ok


def mask_nodata(block: DeviceArray, nodata: float, use_nodata: bool, valid: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.mask_nodata`."""
    blocks, threads = _grid_2d(*valid.shape)
    _mask[blocks, threads](block, np.float32(nodata), use_nodata, valid)


@cuda.jit
def _pack(block, valid, ys, xs, mean, inv_std, out, counts, channels_first):  # noqa: ANN001
    j, i, n = cuda.grid(3)
    size = out.shape[2] if channels_first else out.shape[1]  # one flag per launch: no divergence
    bands = out.shape[1] if channels_first else out.shape[3]
    if n >= out.shape[0] or i >= size or j >= size:
        return
    y = ys[n] + i
    x = xs[n] + j
    ok = valid[y, x]
    if ok:
        cuda.atomic.add(counts, n, 1)
    for b in range(bands):
        value = (block[b, y, x] - mean[b]) * inv_std[b] if ok else 0.0
        if channels_first:
            out[n, b, i, j] = value
        else:
            out[n, i, j, b] = value


@cuda.jit
def _zero_1d(a):  # noqa: ANN001
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = 0


def _pack_tiles(block: DeviceArray, valid: DeviceArray, ys: np.ndarray | DeviceArray, xs: np.ndarray | DeviceArray,
                mean: np.ndarray | DeviceArray, inv_std: np.ndarray | DeviceArray, out: DeviceArray, counts: DeviceArray,
                channels_first: bool) -> None:
    n, size = out.shape[0], out.shape[2 if channels_first else 1]
    _zero_1d[math.ceil(n / 128), 128](counts)
    ys, xs, mean, inv_std = (_on_device(a) for a in (ys, xs, mean, inv_std))
    blocks = (math.ceil(size / 16), math.ceil(size / 16), n)
    _pack[blocks, (16, 16, 1)](block, valid, ys, xs, mean, inv_std, out, counts, channels_first)


def pack_tiles(block: DeviceArray, valid: DeviceArray, ys: np.ndarray | DeviceArray, xs: np.ndarray | DeviceArray,
               mean: np.ndarray | DeviceArray, inv_std: np.ndarray | DeviceArray, out: DeviceArray, counts: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.pack_tiles` (``ys``/``xs``/``mean``/``inv_std`` host or device)."""
    _pack_tiles(block, valid, ys, xs, mean, inv_std, out, counts, False)


def pack_tiles_nchw(block: DeviceArray, valid: DeviceArray, ys: np.ndarray | DeviceArray, xs: np.ndarray | DeviceArray,
                    mean: np.ndarray | DeviceArray, inv_std: np.ndarray | DeviceArray, out: DeviceArray,
                    counts: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.pack_tiles_nchw`."""
    _pack_tiles(block, valid, ys, xs, mean, inv_std, out, counts, True)


@cuda.jit
def _blend(probs, ys, xs, weight, acc, channels_first):  # noqa: ANN001
    x, y = cuda.grid(2)
    if y >= acc.shape[1] or x >= acc.shape[2]:
        return
    if channels_first:  # one flag per launch: no divergence
        size = min(probs.shape[2], probs.shape[3], weight.shape[0], weight.shape[1])
    else:
        size = min(probs.shape[1], probs.shape[2], weight.shape[0], weight.shape[1])
    k = acc.shape[0] - 1  # bounds from the buffers themselves, as in the CPU kernel
    kk = min(k, probs.shape[1] if channels_first else probs.shape[3])
    for n in range(probs.shape[0]):
        i = y - ys[n]
        j = x - xs[n]
        if i < 0 or i >= size or j < 0 or j >= size:
            continue
        wgt = weight[i, j]
        for c in range(kk):
            acc[c, y, x] += wgt * (probs[n, c, i, j] if channels_first else probs[n, i, j, c])
        acc[k, y, x] += wgt


def blend_accumulate(probs: DeviceArray, ys: np.ndarray | DeviceArray, xs: np.ndarray | DeviceArray,
                     weight: np.ndarray | DeviceArray, acc: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.blend_accumulate`: one thread per accumulator pixel."""
    blocks, threads = _grid_2d(acc.shape[1], acc.shape[2])
    _blend[blocks, threads](probs, _on_device(ys), _on_device(xs), _on_device(weight), acc, False)


def blend_accumulate_nchw(probs: DeviceArray, ys: np.ndarray | DeviceArray, xs: np.ndarray | DeviceArray,
                          weight: np.ndarray | DeviceArray, acc: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.blend_accumulate_nchw`."""
    blocks, threads = _grid_2d(acc.shape[1], acc.shape[2])
    _blend[blocks, threads](probs, _on_device(ys), _on_device(xs), _on_device(weight), acc, True)


@cuda.jit
def _finalize(acc, valid, classes, probs, confidence, want_probs, want_conf):  # noqa: ANN001
    x, y = cuda.grid(2)
    if y >= classes.shape[0] or x >= classes.shape[1]:
        return
    _finalize_span(acc, valid, classes, probs, confidence, want_probs, want_conf, y, x, x + 1)


def finalize(acc: DeviceArray, valid: DeviceArray, classes: DeviceArray, probs: DeviceArray, confidence: DeviceArray,
             want_probs: bool, want_conf: bool) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.finalize`."""
    blocks, threads = _grid_2d(*classes.shape)
    _finalize[blocks, threads](acc, valid, classes, probs, confidence, want_probs, want_conf)


@cuda.jit
def _uncertainty(acc, valid, out, measure, table):  # noqa: ANN001
    x, y = cuda.grid(2)
    if y >= out.shape[0] or x >= out.shape[1]:
        return
    _uncertainty_span(acc, valid, out, measure, table, y, x, x + 1)


def uncertainty(acc: DeviceArray, valid: DeviceArray, out: DeviceArray, measure: int, table: DeviceArray) -> None:
    """Device twin of :func:`lulc.runtime.kernels.cpu.uncertainty`."""
    blocks, threads = _grid_2d(*out.shape)
    _uncertainty[blocks, threads](acc, valid, out, measure, table)


# ---- buffer helpers: the runtime's few whole-array operations, on device -------------------

# modes of _update3: assignments, not arithmetic, so NaN garbage in fresh buffers cannot survive
_ADD, _COPY, _ZERO = 0, 1, 2


@cuda.jit
def _update3(dst, src, mode):  # noqa: ANN001
    x, y, c = cuda.grid(3)
    if c < dst.shape[0] and y < dst.shape[1] and x < dst.shape[2]:
        if mode == _ADD:
            dst[c, y, x] += src[c, y, x]
        elif mode == _COPY:
            dst[c, y, x] = src[c, y, x]
        else:
            dst[c, y, x] = 0


def _launch3(dst: DeviceArray, src: DeviceArray, mode: int) -> None:
    c, h, w = dst.shape
    _update3[(math.ceil(w / 16), math.ceil(h / 16), c), (16, 16, 1)](dst, src, mode)


def add_into(dst: DeviceArray, src: DeviceArray) -> None:
    """dst += src for (C, H, W) float32 device arrays (views allowed)."""
    _launch3(dst, src, _ADD)


def copy_into(dst: DeviceArray, src: DeviceArray) -> None:
    """dst[...] = src."""
    _launch3(dst, src, _COPY)


def zero(dst: DeviceArray) -> None:
    """dst[...] = 0."""
    _launch3(dst, dst, _ZERO)


def empty(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> DeviceArray:
    """An uninitialised device buffer, written whole by the kernel that fills it."""
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> DeviceArray:
    """A zeroed device buffer (accumulators and carried strips start at 0)."""
    out = empty(shape, dtype)
    zero(out)
    return out


def to_device(host: np.ndarray, out: DeviceArray | None = None) -> DeviceArray:
    """Copy a host array into ``out`` (a preallocated device buffer) or a new one."""
    if out is None:
        return cuda.to_device(host)
    out.copy_to_device(host)
    return out


def to_host(array: DeviceArray) -> np.ndarray:
    """A device array copied to the host (a finished block's bands)."""
    return array.copy_to_host()


def _on_device(a: np.ndarray | DeviceArray) -> DeviceArray:
    return cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
