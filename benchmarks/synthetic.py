"""Synthetic benchmark rasters, written block by block so a 16k^2 scene never sits in RAM.

Bands follow the bundle (names, dtype, per-band mean/std) so the model sees in-range input;
smooth waves plus noise give it varied structure to classify.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from lulc.runtime.core.bundle import Bundle

BLOCK = 1024


def synthetic_block(y0: int, x0: int, h: int, w: int, mean: np.ndarray, std: np.ndarray, seed: int) -> np.ndarray:
    """(C, h, w) float32 reflectance-like values around the training statistics."""
    rng = np.random.default_rng([seed, y0, x0])
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    field = np.sin(xx / 37.0) + np.cos(yy / 53.0) + 0.5 * np.sin((xx + yy) / 11.0)
    phase = np.arange(len(mean), dtype=np.float32)[:, None, None]
    z = np.cos(phase) * field[None] + 0.3 * rng.standard_normal((len(mean), h, w), dtype=np.float32)
    return mean[:, None, None] + std[:, None, None] * z


def write_synthetic(path: str | os.PathLike, size: int, bundle_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a ``size`` x ``size`` tiled GeoTIFF with the bundle's bands (uncompressed: I/O stays cheap)."""
    m = Bundle.load(bundle_dir).manifest
    mean = np.asarray(m.normalization.mean, np.float32)
    std = np.asarray(m.normalization.std, np.float32)
    dtype = np.dtype(m.input.dtype)
    lo, hi = (np.iinfo(dtype).min + 1, np.iinfo(dtype).max) if dtype.kind in "ui" else (-np.inf, np.inf)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(mean), "dtype": dtype.name,
               "crs": "EPSG:32633", "transform": from_origin(300000, 5900000, 10, 10), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "interleave": "pixel", "BIGTIFF": "IF_SAFER"}
    if m.input.nodata is not None:
        profile["nodata"] = m.input.nodata
    path = Path(path)
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(m.input.bands, start=1):
            dst.set_band_description(i, name)
        for y0 in range(0, size, BLOCK):
            for x0 in range(0, size, BLOCK):
                h, w = min(BLOCK, size - y0), min(BLOCK, size - x0)
                block = np.clip(synthetic_block(y0, x0, h, w, mean, std, seed), lo, hi)
                dst.write(block.astype(dtype), window=Window(x0, y0, w, h))
    return path
