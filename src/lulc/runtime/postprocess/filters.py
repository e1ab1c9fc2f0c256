"""Neighbourhood filters of a class map: majority (modal) filter and Bayesian smoothing.

* **Majority** (``--majority R``): each classified pixel takes the most frequent class in the
  (2R+1)² window around it; nodata neither votes nor changes; a tie keeps the pixel's own
  class when it is among the most frequent, else goes to the smallest class value (Orfeo
  ToolBox's ``ClassificationMapRegularization`` rule with ``ip.suvbool`` off).
* **Bayesian smoothing** (``--smooth bayes``), the method of sits' ``sits_smooth`` (Câmara et
  al., "sits: Satellite Image Time Series", Bayesian smoothing): per class, the logit
  x = ln(p / (1 − p)) of each pixel is pulled towards the mean m of the logits in its window
  by the ratio of their spread v (the window's variance) to the prior smoothness s:
  x' = v/(s + v)·x + s/(s + v)·m; probabilities are the inverse logits, normalised, and the
  class their argmax. Uniform windows (v = 0) keep x' = m = x. Unlike sits, every valid
  pixel of the window counts (sits' ``neigh_fraction`` keeps the most probable half); the
  probabilities are the map's stored ones (uint8, steps of 1/254), clipped to [1e-4, 1 − 1e-4].
"""
from __future__ import annotations

import numpy as np
from numba import njit

from lulc.runtime.io.mapformat import NODATA_CLASS

#: logits are taken of probabilities clipped to [EPS, 1 - EPS]
EPS = 1e-4


@njit(nogil=True, cache=True)
def majority(classes: np.ndarray, radius: int, y0: int, out: np.ndarray) -> None:
    """Majority filter of rows y0 .. y0 + len(out) of ``classes`` (which holds the halo rows)."""
    h, w = classes.shape
    counts = np.zeros(256, np.int64)
    for oy in range(out.shape[0]):
        y = y0 + oy
        for x in range(w):
            centre = classes[y, x]
            if centre == NODATA_CLASS:
                out[oy, x] = centre
                continue
            counts[:] = 0
            best = 0
            for yy in range(max(0, y - radius), min(h, y + radius + 1)):
                for xx in range(max(0, x - radius), min(w, x + radius + 1)):
                    c = classes[yy, xx]
                    if c != NODATA_CLASS:
                        counts[c] += 1
                        if counts[c] > best:
                            best = counts[c]
            if counts[centre] == best:
                out[oy, x] = centre
            else:
                for c in range(256):
                    if counts[c] == best:
                        out[oy, x] = c
                        break


def box_sums(a: np.ndarray, radius: int, y0: int, rows: int) -> np.ndarray:
    """Sums of ``a`` (H, W) over the (2r+1)² window of each pixel of rows y0 .. y0 + rows,
    the window clipped to the array (an integral image: the cost does not grow with r)."""
    h, w = a.shape
    integral = np.zeros((h + 1, w + 1), np.float64)
    np.cumsum(np.cumsum(a, axis=0), axis=1, out=integral[1:, 1:])
    ys = np.arange(y0, y0 + rows)
    xs = np.arange(w)
    top, bottom = np.clip(ys - radius, 0, h), np.clip(ys + radius + 1, 0, h)
    left, right = np.clip(xs - radius, 0, w), np.clip(xs + radius + 1, 0, w)
    return (integral[bottom][:, right] - integral[top][:, right] - integral[bottom][:, left]
            + integral[top][:, left])


def bayes(probs: np.ndarray, valid: np.ndarray, radius: int, smoothness: float, y0: int, rows: int) -> np.ndarray:
    """Bayesian smoothing of rows y0 .. y0 + rows of ``probs`` (K, H, W) in [0, 1] (``valid``:
    classified pixels): the normalised smoothed probabilities (K, rows, W), 0 where invalid."""
    weight = valid.astype(np.float64)
    n = np.maximum(box_sums(weight, radius, y0, rows), 1.0)
    here = valid[y0 : y0 + rows]
    out = np.empty((probs.shape[0], rows, probs.shape[2]), np.float64)
    for c, p in enumerate(probs):
        p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
        logit = np.log(p / (1 - p)) * weight
        mean = box_sums(logit, radius, y0, rows) / n
        var = np.maximum(box_sums(logit * logit, radius, y0, rows) / n - mean**2, 0.0)
        x = logit[y0 : y0 + rows]
        smoothed = var / (smoothness + var) * x + smoothness / (smoothness + var) * mean
        out[c] = np.where(here, 1.0 / (1.0 + np.exp(-smoothed)), 0.0)
    total = out.sum(axis=0)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)
