"""Numba kernels for temporal bundles: per-date masking instead of per-pixel masking.

A single-date bundle drops a pixel when ANY band is nodata. On a time series that would
drop every pixel that was cloudy once, so here a *date* is missing for a pixel when any of
its bands is nodata/NaN, the missing date's channels are fed to the model as NaN (the
temporal models mask them, see ``lulc.training.models.recurrent``), and a pixel is nodata
only when ALL its dates are missing. :class:`lulc.runtime.kernels.BlockOps` calls these in place
of the single-date ``mask_nodata`` / ``pack_tiles`` for time-series bundles.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from lulc.runtime.kernels.cpu import is_missing


@njit(nogil=True, cache=True)
def _date_missing(block: np.ndarray, b0: int, bands: int, y: int, x: int, nodata: float, use_nodata: bool) -> bool:
    for b in range(b0, b0 + bands):
        if is_missing(block[b, y, x], nodata, use_nodata):
            return True
    return False


@njit(nogil=True, cache=True)
def mask_all_dates(block: np.ndarray, bands: int, nodata: float, use_nodata: bool, valid: np.ndarray) -> None:
    """valid (H, W) = at least one date of block (T*C, H, W) has all its bands."""
    c, h, w = block.shape
    for y in range(h):
        for x in range(w):
            ok = False
            for b0 in range(0, c, bands):
                if not _date_missing(block, b0, bands, y, x, nodata, use_nodata):
                    ok = True
                    break
            valid[y, x] = ok


@njit(nogil=True, cache=True)
def pack_dates(block: np.ndarray, valid: np.ndarray, ys: np.ndarray, xs: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
               out: np.ndarray, counts: np.ndarray, bands: int, nodata: float, use_nodata: bool) -> None:
    """Like ``kernels.pack_tiles`` but a missing date (and an invalid pixel) packs as NaN."""
    c = block.shape[0]
    size = out.shape[1]
    for n in range(ys.shape[0]):
        y0 = ys[n]
        x0 = xs[n]
        count = 0
        for i in range(size):
            for j in range(size):
                ok = valid[y0 + i, x0 + j]
                count += ok
                for b0 in range(0, c, bands):
                    gap = not ok or _date_missing(block, b0, bands, y0 + i, x0 + j, nodata, use_nodata)
                    for b in range(b0, b0 + bands):
                        out[n, i, j, b] = np.nan if gap else (block[b, y0 + i, x0 + j] - mean[b]) * inv_std[b]
        counts[n] = count


def reference_mask_dates(raw: np.ndarray, nodata: float | None, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy definition: (T*C, H, W) -> raw with NaN on missing dates, and valid (H, W).

    Training uses it to see exactly what the runtime feeds (before normalisation).
    """
    c, h, w = raw.shape
    dates = raw.reshape(c // bands, bands, h, w)
    gap = np.isnan(dates).any(axis=1)
    if nodata is not None:
        gap |= (dates == nodata).any(axis=1)
    out = np.where(gap[:, None], np.nan, dates).reshape(c, h, w).astype(np.float32)
    return out, ~gap.all(axis=0)
