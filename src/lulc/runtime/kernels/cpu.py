"""Numba CPU kernels for the per-pixel hot loops of tiled inference.

Three passes touch every pixel: pack (normalise raw bands into model tiles), blend
(accumulate weighted tile probabilities into a block) and finalize (argmax, scaled bands);
``mode_2x2`` then builds the written map's overviews (:mod:`lulc.runtime.io.overviews`).
Every kernel writes into caller-owned buffers: the runtime reuses them block after block,
because page-faulting fresh 50-100 MB arrays per block cost more than the kernels themselves.
Each kernel is ``nogil`` so the reader, model and writer threads overlap, and serial: the
pipeline already runs its stages on threads of their own, so a kernel spread over every
core only took cores from the model calls (2 cores: the U-Net at 4096² no faster end to end,
the faster `fcn` at 10980² ~4 % faster), and Numba's parallel compilation made the first
run after install 2.8 s slower than the second, against 1.1 s for serial kernels. The NumPy
definitions the tests compare these and the CUDA twins (:mod:`lulc.runtime.kernels.cuda`) against
live in :mod:`lulc.runtime.kernels.reference`, the start-up warm-up in
:mod:`lulc.runtime.kernels.warmup`; :func:`lulc.runtime.kernels.block_ops` picks the twin.
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE

_GAP = np.uint8(NODATA_CLASS)  # an overview cell's pixels past the raster edge: never counted


# The per-pixel rules below are plain Python, compiled here for the CPU and by
# :mod:`lulc.runtime.kernels.cuda` as device functions, so both twins apply the same rule.

def missing(v: float, nodata: float, use_nodata: bool) -> bool:
    """The one nodata rule of every kernel: NaN, or the nodata value when there is one."""
    return math.isnan(v) or (use_nodata and v == nodata)


def finalize_span(acc: np.ndarray, valid: np.ndarray, classes: np.ndarray, probs: np.ndarray,
                  confidence: np.ndarray, want_probs: bool, want_conf: bool, y: int, x0: int, x1: int) -> None:
    """Pixels x0 <= x < x1 of row y of :func:`finalize` (a CUDA thread takes one): argmax class,
    optional uint8 probabilities and confidence; NODATA_CLASS (and 255 in scaled bands) where
    invalid or without weight."""
    k = acc.shape[0] - 1
    for x in range(x0, x1):
        wsum = acc[k, y, x]
        if not valid[y, x] or wsum <= 0.0:
            classes[y, x] = NODATA_CLASS
            if want_probs:
                for c in range(k):
                    probs[c, y, x] = 255
            if want_conf:
                confidence[y, x] = 255
            continue
        best = 0
        best_v = acc[0, y, x]
        for c in range(1, k):
            if acc[c, y, x] > best_v:
                best_v = acc[c, y, x]
                best = c
        classes[y, x] = best
        if want_probs:
            for c in range(k):
                probs[c, y, x] = np.uint8(min(acc[c, y, x] / wsum, 1.0) * PROB_SCALE + 0.5)
        if want_conf:
            confidence[y, x] = np.uint8(min(best_v / wsum, 1.0) * PROB_SCALE + 0.5)


#: --uncertainty measures, as the kernels number them
MEASURES = {"entropy": 0, "margin": 1, "least": 2}


def entropy_table(classes: int) -> np.ndarray:
    """-p ln p / ln K for every stored probability p = q / PROB_SCALE (q = 0..PROB_SCALE): the
    entropy band is the entropy of the probabilities as the map stores them, summed from this
    table (no logarithm per pixel and class)."""
    p = np.arange(PROB_SCALE + 1, dtype=np.float64) / PROB_SCALE
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return (terms / math.log(classes)).astype(np.float32)


def uncertainty_span(acc: np.ndarray, valid: np.ndarray, out: np.ndarray, measure: int, table: np.ndarray,
                     y: int, x0: int, x1: int) -> None:
    """Pixels x0 <= x < x1 of row y of :func:`uncertainty`: 0 (sure) .. PROB_SCALE (unsure),
    255 where invalid. Entropy H(p)/ln K of the stored (uint8) probabilities; margin
    1 - (p1 - p2); least confidence 1 - p1."""
    k = acc.shape[0] - 1
    for x in range(x0, x1):
        wsum = acc[k, y, x]
        if not valid[y, x] or wsum <= 0.0:
            out[y, x] = 255
            continue
        if measure == 0:
            h = 0.0
            for c in range(k):
                h += table[int(min(acc[c, y, x] / wsum, 1.0) * PROB_SCALE + 0.5)]
            u = h
        else:
            first = 0.0
            second = 0.0
            for c in range(k):
                v = acc[c, y, x] / wsum
                if v > first:
                    second = first
                    first = v
                elif v > second:
                    second = v
            u = 1.0 - (first - second) if measure == 1 else 1.0 - first
        out[y, x] = np.uint8(min(max(u, 0.0), 1.0) * PROB_SCALE + 0.5)


is_missing = njit(nogil=True, cache=True, inline="always")(missing)
_finalize_span = njit(nogil=True, cache=True, inline="always")(finalize_span)
_uncertainty_span = njit(nogil=True, cache=True, inline="always")(uncertainty_span)


@njit(nogil=True, cache=True)
def mask_nodata(block: np.ndarray, nodata: float, use_nodata: bool, valid: np.ndarray) -> None:
    """valid (H, W) = no band is nodata or NaN in block (C, H, W)."""
    c, h, w = block.shape
    for y in range(h):
        for x in range(w):
            valid[y, x] = True
        # band-major inner loops read each band row contiguously (6x faster than per pixel)
        for b in range(c):
            for x in range(w):
                if is_missing(block[b, y, x], nodata, use_nodata):
                    valid[y, x] = False


@njit(nogil=True, cache=True)
def pack_tiles(
    block: np.ndarray,
    valid: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    mean: np.ndarray,
    inv_std: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Normalise and pack tiles: block (C, H, W) -> out (N, T, T, C) NHWC float32.

    Invalid pixels become 0 (the training mean after z-scoring); ``counts[n]`` receives the
    number of valid pixels in tile n so that all-nodata tiles can skip the model.
    """
    c = block.shape[0]
    size = out.shape[1]
    for n in range(ys.shape[0]):
        y0 = ys[n]
        x0 = xs[n]
        count = 0
        for i in range(size):
            for j in range(size):
                if valid[y0 + i, x0 + j]:
                    count += 1
                    for b in range(c):
                        out[n, i, j, b] = (block[b, y0 + i, x0 + j] - mean[b]) * inv_std[b]
                else:
                    for b in range(c):
                        out[n, i, j, b] = 0.0
        counts[n] = count


@njit(nogil=True, cache=True)
def blend_accumulate(
    probs: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray, acc: np.ndarray
) -> None:
    """Add weighted tile probabilities (N, T, T, K) into ``acc`` (K + 1, H, W).

    The last plane of ``acc`` collects the weight sum. Row by row over the accumulator
    (not tile by tile), so each accumulator row is written in one pass while it is in cache.
    """
    # every bound comes from the buffers read and written, so a model whose output does not
    # match the accumulator can never write outside it
    k = acc.shape[0] - 1
    kk = min(k, probs.shape[3])
    size = min(probs.shape[1], weight.shape[0])
    for y in range(acc.shape[1]):
        for n in range(probs.shape[0]):
            i = y - ys[n]
            if i < 0 or i >= size:
                continue
            x0 = xs[n]
            for j in range(max(0, min(size, probs.shape[2], weight.shape[1], acc.shape[2] - x0))):
                wgt = weight[i, j]
                for c in range(kk):
                    acc[c, y, x0 + j] += wgt * probs[n, i, j, c]
                acc[k, y, x0 + j] += wgt


@njit(nogil=True, cache=True)
def pack_tiles_nchw(
    block: np.ndarray,
    valid: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    mean: np.ndarray,
    inv_std: np.ndarray,
    out: np.ndarray,
    counts: np.ndarray,
) -> None:
    """:func:`pack_tiles` for a channels-first model: out (N, C, T, T). Each band's rows are
    copied as rows (the block is band-major too), where the NHWC packing interleaves bands."""
    c = block.shape[0]
    size = out.shape[2]
    for n in range(ys.shape[0]):
        y0 = ys[n]
        x0 = xs[n]
        count = 0
        for i in range(size):
            for j in range(size):
                count += valid[y0 + i, x0 + j]
        counts[n] = count
        for b in range(c):
            m = mean[b]
            s = inv_std[b]
            for i in range(size):
                row = block[b, y0 + i, x0 : x0 + size]
                ok = valid[y0 + i, x0 : x0 + size]
                dst = out[n, b, i]
                for j in range(size):  # a select, not a branch: the row loop vectorises (2.2x the NHWC pack)
                    v = (row[j] - m) * s
                    dst[j] = v if ok[j] else np.float32(0.0)


@njit(nogil=True, cache=True)
def blend_accumulate_nchw(
    probs: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray, acc: np.ndarray
) -> None:
    """:func:`blend_accumulate` of channels-first probabilities (N, K, T, T): class planes are
    added row by row into the accumulator's planes, both contiguous."""
    k = acc.shape[0] - 1
    kk = min(k, probs.shape[1])
    size = min(probs.shape[2], weight.shape[0])
    for y in range(acc.shape[1]):
        for n in range(probs.shape[0]):
            i = y - ys[n]
            if i < 0 or i >= size:
                continue
            x0 = xs[n]
            width = max(0, min(size, probs.shape[3], weight.shape[1], acc.shape[2] - x0))
            for c in range(kk):
                for j in range(width):
                    acc[c, y, x0 + j] += weight[i, j] * probs[n, c, i, j]
            for j in range(width):
                acc[k, y, x0 + j] += weight[i, j]


@njit(nogil=True, cache=True)
def finalize(
    acc: np.ndarray,
    valid: np.ndarray,
    classes: np.ndarray,
    probs: np.ndarray,
    confidence: np.ndarray,
    want_probs: bool,
    want_conf: bool,
) -> None:
    """Blended sums (K + 1, >=H, >=W) -> argmax classes (H, W) uint8 and optional uint8 bands.

    Pixels that are invalid or received no weight get NODATA_CLASS (and 255 in scaled bands).
    """
    h, w = classes.shape
    for y in range(h):
        _finalize_span(acc, valid, classes, probs, confidence, want_probs, want_conf, y, 0, w)


@njit(nogil=True, cache=True)
def uncertainty(acc: np.ndarray, valid: np.ndarray, out: np.ndarray, measure: int, table: np.ndarray) -> None:
    """Blended sums (K + 1, >=H, >=W) -> the uint8 uncertainty band (H, W) of ``measure``
    (:data:`MEASURES`); ``table`` is :func:`entropy_table` of K."""
    h, w = out.shape
    for y in range(h):
        _uncertainty_span(acc, valid, out, measure, table, y, 0, w)


@njit(nogil=True, cache=True, inline="always")
def _mode4(a: int | np.uint8, b: int | np.uint8, c: int | np.uint8, d: int | np.uint8) -> int | np.uint8:
    """Most frequent of four values, NODATA_CLASS excluded; ties go to the earliest."""
    best: int | np.uint8 = NODATA_CLASS
    best_n = 0
    for v in (a, b, c, d):
        if v != NODATA_CLASS:
            n = (a == v) + (b == v) + (c == v) + (d == v)
            if n > best_n:
                best, best_n = v, n
    return best


@njit(nogil=True, cache=True)
def mode_2x2(src: np.ndarray, out: np.ndarray) -> None:
    """out (B, ceil(H/2), ceil(W/2)) = most frequent valid value of each 2 x 2 cell of src (B, H, W).

    NODATA_CLASS never wins over a valid value; ties go to the value met first (row-major),
    so a cell split 2 : 2 keeps its top-left class. Cells past the edge hold only what exists.
    """
    bands, h, w = src.shape
    for band in range(bands):
        for y in range(out.shape[1]):
            i = 2 * y
            down = i + 1 < h
            for x in range(out.shape[2]):
                j = 2 * x
                right = j + 1 < w
                out[band, y, x] = _mode4(
                    src[band, i, j],
                    src[band, i, j + 1] if right else _GAP,
                    src[band, i + 1, j] if down else _GAP,
                    src[band, i + 1, j + 1] if down and right else _GAP,
                )


# ---- buffer helpers, named as in the CUDA twin so the runtime never branches on the device --

def add_into(dst: np.ndarray, src: np.ndarray) -> None:
    """dst += src, in place (the carried overlap strips)."""
    np.add(dst, src, out=dst)


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src, in place."""
    np.copyto(dst, src)


def zero(dst: np.ndarray) -> None:
    """Zero a reused buffer for its next block."""
    dst.fill(0)


def empty(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised buffer, written whole by the kernel that fills it."""
    return np.empty(shape, dtype=dtype)


def zeros(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """Zero pages from the OS, touched (faulted in) by the first kernel that writes them rather
    than all at start-up, where filling 2 x 58 MB accumulators delayed the first model call."""
    return np.zeros(shape, dtype=dtype)


def to_device(host: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Host 'device' is the host: the array itself, or a copy into ``out``."""
    if out is None or out is host:
        return host
    np.copyto(out, host)
    return out


def to_host(array: np.ndarray) -> np.ndarray:
    """Host arrays are already on the host."""
    return array
