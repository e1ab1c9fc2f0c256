"""Several co-registered rasters read as one band stack, named the way training names them.

A model trained on ``--image a.tif --image b.tif`` expects a's bands then b's. ``lulc-infer``
takes the same files and stacks them in a VRT (no pixel copy), so nobody re-orders bands by
hand before inference.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from lulc.runtime.errors import InputRasterError
from lulc.runtime.rasters import open_raster
from lulc.runtime.timestack import write_vrt


def same_grid(a, b) -> bool:
    return (a.width, a.height, a.crs) == (b.width, b.height, b.crs) and a.transform.almost_equals(b.transform)


def stack_band_names(sources) -> list[str]:
    """Band descriptions, or ``band<j>`` (``r<i>_band<j>`` when several rasters) where a band has none."""
    names = []
    for i, src in enumerate(sources):
        prefix = f"r{i + 1}_" if len(sources) > 1 else ""
        names += [d or f"{prefix}band{j}" for j, d in enumerate(src.descriptions, start=1)]
    return names


def write_band_stack(paths: list[str | Path], vrt: Path) -> Path:
    """Write ``vrt`` stacking all bands of ``paths`` in order; the rasters must share a grid and nodata."""
    with ExitStack() as stack:
        sources = [stack.enter_context(open_raster(p, "input raster")) for p in paths]
        ref = sources[0]
        for path, src in zip(paths[1:], sources[1:]):
            if not same_grid(ref, src):
                raise InputRasterError(f"{path} is not on the grid of {paths[0]} (size, CRS or transform differ); "
                                       "warp it onto that grid first (e.g. gdalwarp -te/-tr, or rio warp --like)")
        nodatas = {src.nodata for src in sources}
        if len(nodatas) > 1:
            raise InputRasterError(f"the input rasters have different nodata values ({', '.join(map(str, nodatas))}); "
                                   "give them one (e.g. rio edit-info --nodata)")
        names = iter(stack_band_names(sources))
        bands = [(next(names), Path(src.name), j) for src in sources for j in range(1, src.count + 1)]
        dtype = np.result_type(*[d for src in sources for d in src.dtypes]).name
        write_vrt(vrt, (ref.crs, ref.transform, ref.width, ref.height), dtype, ref.nodata, bands, {})
    return vrt
