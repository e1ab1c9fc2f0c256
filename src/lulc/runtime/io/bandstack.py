"""Several co-registered rasters read as one band stack, named the way training names them.

A model trained on ``--image a.tif --image b.tif`` expects a's bands then b's. ``lulc-infer``
takes the same files and stacks them in a VRT (no pixel copy), so nobody re-orders bands by
hand before inference.

Nodata follows training's rule (``lulc.training.sources.valid_mask``): a pixel is invalid
where any band is NaN or its *own file's* nodata. Files sharing one nodata value (or none)
keep their dtype and that value. Files with different nodata values (e.g. Landsat bands with
-99999 and -32768, or one without) are stacked as Float32 whose nodata is NaN: each source
band leaves out its file's nodata pixels (a VRT ComplexSource), which then read as NaN, and
the runtime masks NaN always. A file without nodata masks only its NaN pixels, as in training.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.rasters import open_raster
from lulc.runtime.io.vrt import write_vrt

if TYPE_CHECKING:
    import rasterio.io


def same_grid(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> bool:
    """Whether two rasters share size, CRS and transform (within rounding): a stack needs one grid."""
    return (a.width, a.height, a.crs) == (b.width, b.height, b.crs) and a.transform.almost_equals(b.transform)


def stack_band_names(sources: Sequence[rasterio.io.DatasetReader]) -> list[str]:
    """Band descriptions, or ``band<j>`` (``r<i>_band<j>`` when several rasters) where a band has none."""
    names = []
    for i, src in enumerate(sources):
        prefix = f"r{i + 1}_" if len(sources) > 1 else ""
        names += [d or f"{prefix}band{j}" for j, d in enumerate(src.descriptions, start=1)]
    return names


def write_band_stack(paths: Sequence[str | os.PathLike], vrt: Path, names: Sequence[str] | None = None) -> Path:
    """Write ``vrt`` stacking all bands of ``paths`` in order; the rasters must share a grid,
    and each keeps its own nodata (see the module docstring). ``names``: the bands' names (a
    STAC item's, checked against the files), else :func:`stack_band_names`."""
    with ExitStack() as stack:
        sources = [stack.enter_context(open_raster(p, "input raster")) for p in paths]
        ref = sources[0]
        for path, src in zip(paths[1:], sources[1:]):
            if not same_grid(ref, src):
                raise InputRasterError(f"{path} is not on the grid of {paths[0]} (size, CRS or transform differ); "
                                       "warp it onto that grid first (e.g. gdalwarp -te/-tr, or rio warp --like)")
        named = iter(names or stack_band_names(sources))
        bands = [(next(named), Path(src.name), j) for src in sources for j in range(1, src.count + 1)]
        grid = (ref.crs, ref.transform, ref.width, ref.height)
        if len({_key(src.nodata) for src in sources}) == 1:
            dtype = np.result_type(*[d for src in sources for d in src.dtypes]).name
            write_vrt(vrt, grid, dtype, ref.nodata, bands, {})
        else:
            per_band = [src.nodata for src in sources for _ in range(src.count)]
            write_vrt(vrt, grid, "float32", float("nan"), bands, {}, source_nodata=per_band)
    return vrt


def _key(nodata: float | None) -> object:
    """Nodata as a set key: NaN != NaN, yet two NaN nodata values are one rule."""
    return "nan" if nodata is not None and np.isnan(nodata) else nodata
