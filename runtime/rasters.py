"""Input rasters: open, check against the bundle, and read blocks with padding.

Every user mistake here becomes an :class:`InputRasterError` with one line that says what
was expected, so ``lulc-infer`` never prints a traceback for a wrong file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from lulc.runtime.errors import InputRasterError
from lulc.runtime.manifest import InputSpec


def open_raster(path: str | os.PathLike, what: str = "raster") -> rasterio.io.DatasetReader:
    """rasterio.open with a one-line error for missing or corrupt files (every command uses it)."""
    if not Path(path).exists():
        raise InputRasterError(f"{what} {path} not found")
    try:
        return rasterio.open(path)
    except (RasterioIOError, RasterioError) as exc:
        raise InputRasterError(f"cannot read {what} {path} (corrupt or not a raster?): {exc}") from None


def open_input(path: str | os.PathLike, spec: InputSpec) -> rasterio.io.DatasetReader:
    """Open ``path`` and check it against the bundle's input spec."""
    src = open_raster(path, "input raster")
    try:
        check_input(src, spec)
    except InputRasterError:
        src.close()
        raise
    return src


def check_input(src: rasterio.io.DatasetReader, spec: InputSpec) -> None:
    name = Path(src.name).name
    if src.width == 0 or src.height == 0:
        raise InputRasterError(f"{name} is empty ({src.width} x {src.height} px)")
    if src.crs is None:
        raise InputRasterError(f"{name} has no CRS; assign one (e.g. `rio edit-info --crs EPSG:32633`) so the output can be georeferenced")
    if src.count != len(spec.bands):
        raise InputRasterError(
            f"{name} has {src.count} bands but the model expects {len(spec.bands)} ({', '.join(spec.bands)})"
        )
    names = list(src.descriptions)
    if all(names) and [n.lower() for n in names] != [b.lower() for b in spec.bands]:
        raise InputRasterError(
            f"{name} band names {', '.join(names)} differ from the model's {', '.join(spec.bands)}; reorder the bands or rename them"
        )


def input_nodata(src: rasterio.io.DatasetReader, spec: InputSpec) -> float | None:
    """The file's nodata value wins; the bundle's is the fallback for files that lack one."""
    return src.nodata if src.nodata is not None else spec.nodata


def read_padded(src: rasterio.io.DatasetReader, y0: int, x0: int, span: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """Read a ``span``-square window at (y0, x0) as (C, span, span) float32; outside the raster is NaN.

    GDAL converts to float32 straight into ``out`` (reused between blocks when given), so no
    per-block temporary arrays are created. This is the one reading seam of the runtime:
    other inputs (e.g. multi-date stacks) only need to fill the same block layout.
    """
    if out is None:
        out = np.empty((src.count, span, span), dtype=np.float32)
    h = max(0, min(span, src.height - y0))
    w = max(0, min(span, src.width - x0))
    out[:, h:, :] = np.nan
    out[:, :h, w:] = np.nan
    if h == 0 or w == 0:
        return out
    window = Window(x0, y0, w, h)
    try:
        src.read(window=window, out=out[:, :h, :w])
    except (RasterioIOError, RasterioError) as exc:
        raise InputRasterError(
            f"failed to read {Path(src.name).name} at window col {x0} row {y0} size {w} x {h}: "
            f"{exc.__context__ or exc}"  # GDAL's own reason, not rasterio's "see previous exception"
        ) from exc
    return out
