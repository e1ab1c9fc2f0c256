"""What an assessment reads from a class map: its classes, its pixel area, and its pixel counts.

Counts are streamed block by block (never the whole map in memory); a block that a sparse
GeoTIFF never wrote (0 bytes on disk) is counted as nodata without being read, so a mostly
empty 100 000² map is counted in seconds with flat memory.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.rasters import open_raster

#: MB of GDAL block cache while a map is streamed
GDAL_CACHE_MB = 64


@dataclass
class MapClasses:
    """The classes of a map: pixel value -> name, in value order."""

    names: dict[int, str]

    @property
    def values(self) -> list[int]:
        return list(self.names)

    def index(self) -> np.ndarray:
        """Lookup from pixel value (uint16 range) to class index, -1 for values that are no class."""
        lut = np.full(65536, -1, np.int64)
        lut[self.values] = np.arange(len(self.values))
        return lut


def _json_tag(src: rasterio.io.DatasetReader, key: str) -> dict[int, str]:
    raw = src.tags(1).get(key) or src.tags().get(key)
    try:
        legend = json.loads(raw) if raw else {}
        items = enumerate(legend) if isinstance(legend, list) else legend.items()  # lulc sample's labels: a list
        return {int(k): str(v) for k, v in items}
    except (ValueError, AttributeError, TypeError):
        raise InputRasterError(f"{Path(src.name).name} has an unreadable {key} tag") from None


def _pam_categories(path: str) -> dict[int, str]:
    """GDAL category names of band 1 from ``PATH.aux.xml`` (empty names are no class)."""
    try:
        root = ET.parse(f"{path}.aux.xml").getroot()
    except (OSError, ET.ParseError):
        return {}
    band = next((b for b in root.iter("PAMRasterBand") if b.get("band") == "1"), None)
    names = band.find("CategoryNames") if band is not None else None
    if names is None:
        return {}
    return {i: (c.text or "") for i, c in enumerate(names.iter("Category")) if (c.text or "").strip()}


def map_classes(src: rasterio.io.DatasetReader) -> MapClasses:
    """A map's classes: lulc-infer's ``CLASS_NAMES``, lulc change's ``TRANSITIONS`` (a change
    map's classes are its from–to transitions), else GDAL category names; one line where the
    map names none."""
    for found in (_json_tag(src, "CLASS_NAMES") if "TRANSITIONS" not in src.tags() else {},
                  _json_tag(src, "TRANSITIONS"), _pam_categories(src.name)):
        if found:
            return MapClasses(dict(sorted(found.items())))
    raise InputRasterError(f"{Path(src.name).name} names no classes (no CLASS_NAMES or TRANSITIONS tag, no category "
                           "names); assess maps written by lulc-infer, lulc batch or lulc change")


def pixel_area_ha(src: rasterio.io.DatasetReader) -> float:
    """Hectares per pixel; areas need a projected CRS in linear units."""
    if src.crs is None or not src.crs.is_projected:
        raise InputRasterError(f"{Path(src.name).name} is not in a projected CRS; areas need metres: reproject the "
                               "map (e.g. gdalwarp -r near -t_srs EPSG:326xx)")
    return abs(src.transform.a * src.transform.e) * src.crs.linear_units_factor[1] ** 2 / 1e4


def count_pixels(src: rasterio.io.DatasetReader) -> np.ndarray:
    """Pixels per value of band 1 (65536 bins), streamed block by block; nodata pixels are
    counted under the nodata value like any other, for the caller to leave out."""
    if src.dtypes[0] not in ("uint8", "uint16"):
        raise InputRasterError(f"{Path(src.name).name} is {src.dtypes[0]}; a class map is uint8 or uint16")
    counts = np.zeros(65536, np.int64)
    fill = int(src.nodata) if src.nodata is not None else 0
    for (row, col), window in src.block_windows(1):
        if sparse_block(src, row, col):
            counts[fill] += int(window.width * window.height)
            continue
        counts += np.bincount(src.read(1, window=window).ravel(), minlength=65536)
    return counts


def sparse_block(src: rasterio.io.DatasetReader, row: int, col: int) -> bool:
    """Whether a GeoTIFF block was never written (no offset in the file: it reads as nodata)."""
    if src.driver != "GTiff":
        return False
    offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1)
    return offset in (None, "0")


@contextmanager
def open_map(path: str | os.PathLike, what: str = "class map") -> Iterator[rasterio.io.DatasetReader]:
    """A map (or strata raster), read with a small fixed GDAL block cache (its default, 5 % of
    RAM, would grow with the map as it is streamed)."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(path, what) as src:
        yield src
