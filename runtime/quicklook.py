"""PNG quicklook of a class map, coloured with the map's own colour table."""
from __future__ import annotations

import json
import os

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling

from lulc.runtime.kernels import NODATA_CLASS


def class_lut(src: rasterio.io.DatasetReader) -> np.ndarray:
    """256 x RGBA lookup table from the colour table, or the CLASS_COLORS tag of multi-band maps."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    if src.count == 1:
        for value, rgba in src.colormap(1).items():
            lut[value] = rgba
    else:
        for value, rgb in json.loads(src.tags(1)["CLASS_COLORS"]).items():
            lut[int(value)] = (*rgb, 255)
    return lut


def write_quicklook(class_map: str | os.PathLike, png: str | os.PathLike, max_side: int = 2048) -> None:
    """Write a downsampled RGBA preview (nodata transparent), read from the COG's overviews."""
    with rasterio.open(class_map) as src:
        scale = max(src.width, src.height) / max_side
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale))) if scale > 1 else (src.height, src.width)
        classes = src.read(1, out_shape=shape, resampling=Resampling.mode)
        lut = class_lut(src)
    lut[NODATA_CLASS] = (0, 0, 0, 0)
    Image.fromarray(lut[classes], mode="RGBA").save(png)
