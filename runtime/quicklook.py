"""PNG quicklook of a class map, coloured with the map's own colour table."""
from __future__ import annotations

import os

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling

from lulc.runtime.kernels import NODATA_CLASS


def write_quicklook(class_map: str | os.PathLike, png: str | os.PathLike, max_side: int = 2048) -> None:
    """Write a downsampled RGBA preview (nodata transparent), read from the COG's overviews."""
    with rasterio.open(class_map) as src:
        scale = max(src.width, src.height) / max_side
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale))) if scale > 1 else (src.height, src.width)
        classes = src.read(1, out_shape=shape, resampling=Resampling.mode)
        cmap = src.colormap(1)
    lut = np.zeros((256, 4), dtype=np.uint8)
    for value, rgba in cmap.items():
        lut[value] = rgba
    lut[NODATA_CLASS] = (0, 0, 0, 0)
    Image.fromarray(lut[classes], mode="RGBA").save(png)
