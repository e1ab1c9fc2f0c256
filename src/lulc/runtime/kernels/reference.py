"""The plain NumPy definitions of the CPU kernels (:mod:`lulc.runtime.kernels.cpu`): what the
tests compare the Numba kernels and their CUDA twins against, written for clarity, not speed."""
from __future__ import annotations

import numpy as np

from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE


def reference_mask(block: np.ndarray, nodata: float, use_nodata: bool) -> np.ndarray:
    """NumPy definition of :func:`mask_nodata` (returns valid)."""
    bad = np.isnan(block).any(0)
    if use_nodata:
        bad |= (block == nodata).any(0)
    return ~bad


def reference_pack(block: np.ndarray, valid: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int, mean: np.ndarray,
                   inv_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy definition of :func:`pack_tiles` (returns out, counts)."""
    tiles = []
    counts = []
    for y0, x0 in zip(ys, xs):
        raw = block[:, y0 : y0 + size, x0 : x0 + size].transpose(1, 2, 0)
        ok = valid[y0 : y0 + size, x0 : x0 + size]
        norm = (raw - mean) * inv_std
        tiles.append(np.where(ok[..., None], norm, 0.0).astype(np.float32))
        counts.append(int(ok.sum()))
    return np.stack(tiles), np.array(counts)


def reference_blend(probs: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray,
                    shape: tuple[int, ...]) -> np.ndarray:
    """NumPy definition of :func:`blend_accumulate` on a zeroed accumulator of ``shape``."""
    acc = np.zeros(shape, dtype=np.float64)
    size = probs.shape[1]
    for p, y0, x0 in zip(probs, ys, xs):
        acc[:-1, y0 : y0 + size, x0 : x0 + size] += (weight[..., None] * p).transpose(2, 0, 1)
        acc[-1, y0 : y0 + size, x0 : x0 + size] += weight
    return acc


def reference_finalize(acc: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy definition of :func:`finalize`: (classes, probabilities, confidence) as uint8."""
    wsum = acc[-1]
    bad = ~valid | (wsum <= 0)
    classes = np.argmax(acc[:-1], axis=0).astype(np.uint8)
    share = np.minimum(acc[:-1] / np.where(bad, 1.0, wsum), 1.0)
    probs = np.floor(share * PROB_SCALE + 0.5).astype(np.uint8)
    conf = np.floor(share.max(0) * PROB_SCALE + 0.5).astype(np.uint8)
    classes[bad] = NODATA_CLASS
    probs[:, bad] = 255
    conf[bad] = 255
    return classes, probs, conf


def reference_uncertainty(acc: np.ndarray, valid: np.ndarray, measure: str) -> np.ndarray:
    """NumPy definition of :func:`uncertainty` (the entropy of the probabilities as stored)."""
    wsum = acc[-1]
    bad = ~valid | (wsum <= 0)
    p = np.minimum(acc[:-1] / np.where(bad, 1.0, wsum), 1.0)
    if measure == "entropy":
        stored = np.floor(p * PROB_SCALE + 0.5) / PROB_SCALE
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(stored > 0, -stored * np.log(stored), 0.0).sum(0) / np.log(p.shape[0])
    else:
        top = np.sort(p, axis=0)
        u = 1 - (top[-1] - top[-2]) if measure == "margin" else 1 - top[-1]
    out = np.floor(np.clip(u, 0, 1) * PROB_SCALE + 0.5).astype(np.uint8)
    out[bad] = 255
    return out


def reference_mode_2x2(src: np.ndarray) -> np.ndarray:
    """NumPy definition of :func:`mode_2x2` (for the tests)."""
    bands, h, w = src.shape
    out = np.empty((bands, -(-h // 2), -(-w // 2)), np.uint8)
    for b in range(bands):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                cell = [v for v in src[b, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].ravel() if v != NODATA_CLASS]
                out[b, y, x] = max(cell, key=cell.count) if cell else NODATA_CLASS
    return out


def reference_pack_nchw(block: np.ndarray, valid: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int,
                        mean: np.ndarray, inv_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy definition of ``pack_tiles_nchw``: the NHWC packing, channels first."""
    out, counts = reference_pack(block, valid, ys, xs, size, mean, inv_std)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), counts


def reference_blend_nchw(probs: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray,
                         shape: tuple[int, ...]) -> np.ndarray:
    """NumPy definition of ``blend_accumulate_nchw``: channels-first probabilities blended."""
    return reference_blend(probs.transpose(0, 2, 3, 1), ys, xs, weight, shape)
