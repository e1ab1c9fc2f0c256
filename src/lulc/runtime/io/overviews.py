"""Overviews of a finished class map: the mode of each 2 x 2 cell, level from level, by strips.

GDAL's COG driver can compute mode overviews itself, but its generic resampler took half of
the COG conversion (4096² class map: 0.27 s with it, 0.13 s copying given levels), time
added to every run after the model has finished. Our kernel (:func:`lulc.runtime.kernels.cpu.mode_2x2`) does the same job in ~10 ms
per 16 MPix, strip by strip so memory stays bounded, and the COG driver then copies the
levels (:func:`with_overviews` hands them over in a VRT): 0.17 s for the whole COG step.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from lulc.runtime.kernels.cpu import mode_2x2

#: bytes of the source level read at once: memory stays bounded however wide the map
STRIP_BYTES = 64 * 2**20


def overview_sizes(width: int, height: int, block: int = 512) -> list[tuple[int, int]]:
    """(width, height) of each level, halving until the level fits one ``block`` tile, as the
    COG driver's default overview count does."""
    sizes = []
    while width > block or height > block:
        width, height = math.ceil(width / 2), math.ceil(height / 2)
        sizes.append((width, height))
    return sizes


def level_paths(base: Path) -> list[Path]:
    """Where :func:`write_levels` puts ``base``'s overview levels (none for a map of one tile)."""
    with rasterio.open(base) as src:
        count = len(overview_sizes(src.width, src.height))
    return [base.with_name(f"{base.name}.ovr{n}.tif") for n in range(1, count + 1)]


def write_levels(base: Path, paths: list[Path]) -> None:
    """Write ``base``'s overview levels to ``paths``, each level from the one before."""
    source = base
    with rasterio.open(base) as src:
        profile = {**src.profile, "driver": "GTiff", "compress": None}
        transform = src.transform
    for n, (path, (width, height)) in enumerate(zip(paths, overview_sizes(profile["width"], profile["height"])), 1):
        scaled = transform * transform.scale(2**n, 2**n)
        with rasterio.open(source) as src, rasterio.open(
                path, "w", **{**profile, "width": width, "height": height, "transform": scaled}) as dst:
            step = max(2, STRIP_BYTES // (src.width * src.count) // 2 * 2)  # even: whole output rows
            for y0 in range(0, src.height, step):
                rows = min(step, src.height - y0)
                out = np.empty((src.count, -(-rows // 2), width), np.uint8)
                mode_2x2(src.read(window=Window(0, y0, src.width, rows)), out)
                dst.write(out, window=Window(0, y0 // 2, width, out.shape[1]))
        source = path
