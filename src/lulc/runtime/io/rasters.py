"""Input rasters: open, check against the bundle, and read blocks with padding.

Every user mistake here becomes an :class:`InputRasterError` with one line that says what
was expected, so ``lulc-infer`` never prints a traceback for a wrong file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.core.manifest import InputSpec, Normalization

#: how ``check_input`` compares band names: strict (the default), auto, ignore
BAND_NAME_MODES = ("strict", "auto", "ignore")
#: names lulc gives the bands of stacked rasters that have no descriptions
_STACKED = re.compile(r"r\d+_band\d+", re.IGNORECASE)
#: names GDAL tools and exports give bands by position ("B1", "band2", "Band 3"), not zero-padded
#: like Sentinel-2's meaningful B01..B12
_NUMBERED = re.compile(r"(?:b|band[ _-]?)([1-9]\d*)", re.IGNORECASE)


def open_raster(path: str | os.PathLike, what: str = "raster") -> rasterio.io.DatasetReader:
    """rasterio.open with a one-line error for missing or corrupt files (every command uses it)."""
    if not Path(path).exists():
        raise InputRasterError(f"{what} {path} not found")
    if Path(path).is_dir():
        stack = Path(path) / "stack.vrt"
        hint = f" (a time-series stack? give {stack})" if stack.is_file() else ""
        raise InputRasterError(f"{what} {path} is a folder, not a raster{hint}")
    try:
        return rasterio.open(path)
    except (RasterioIOError, RasterioError) as exc:
        raise InputRasterError(f"cannot read {what} {path} (corrupt or not a raster?): {exc}") from None


def open_input(path: str | os.PathLike, spec: InputSpec, band_names: str = "strict",
               normalization: Normalization | None = None) -> rasterio.io.DatasetReader:
    """Open ``path`` and check it against the bundle's input spec (see :func:`check_input`)."""
    src = open_raster(path, "input raster")
    try:
        check_input(src, spec, band_names, normalization)
    except InputRasterError:
        src.close()
        raise
    return src


def check_input(src: rasterio.io.DatasetReader, spec: InputSpec, band_names: str = "strict",
                normalization: Normalization | None = None) -> None:
    """Refuse a raster the model cannot read correctly: empty, no CRS, wrong band count, other
    band names (per ``band_names``), or a dtype too small for the training values.

    ``band_names``: ``strict`` refuses named bands that differ from the model's; ``auto`` also
    accepts names that carry no meaning on either side (empty, ``B1..Bn``/``band1..`` by
    position, ``r1_band1..``); ``ignore`` trusts the band order and checks only the count.
    ``normalization`` (the bundle's, with its training percentiles) enables the value-scale check.
    """
    if band_names not in BAND_NAME_MODES:
        raise InputRasterError(f"unknown --band-names {band_names!r}; choose one of {', '.join(BAND_NAME_MODES)}")
    name = Path(src.name).name
    if src.width == 0 or src.height == 0:
        raise InputRasterError(f"{name} is empty ({src.width} x {src.height} px)")
    if src.crs is None:
        raise InputRasterError(f"{name} has no CRS; assign one (e.g. `rio edit-info --crs EPSG:32633`) so the output can be georeferenced")
    if src.count != len(spec.bands):
        raise InputRasterError(
            f"{name} has {src.count} bands but the model expects {len(spec.bands)} ({', '.join(spec.bands)})"
        )
    names = [d or "" for d in src.descriptions]
    if band_names != "ignore" and not names_fit(names, spec.bands, band_names == "auto"):
        raise InputRasterError(
            f"{name} band names {', '.join(names)} differ from the model's {', '.join(spec.bands)}; reorder or rename "
            "the bands, or pass --band-names ignore if they already are the model's bands in its order"
        )
    if normalization is not None:
        check_value_range(src, spec, normalization)


def names_fit(names: list[str], model: list[str], auto: bool) -> bool:
    """Strict: equal ignoring case, or some band unnamed (nothing to compare). Auto: also when
    either side's names are all generic."""
    if not all(names) or [n.lower() for n in names] == [b.lower() for b in model]:
        return True
    return auto and (generic_names(names) or generic_names(model))


def generic_names(names: list[str]) -> bool:
    """Whether band names only number the bands (so they say nothing about which band is which)."""
    def generic(name: str, position: int) -> bool:
        name = name.strip()
        numbered = _NUMBERED.fullmatch(name)
        return not name or bool(_STACKED.fullmatch(name)) or (numbered is not None and int(numbered[1]) == position)

    return all(generic(n, i) for i, n in enumerate(names, start=1))


def check_value_range(src: rasterio.io.DatasetReader, spec: InputSpec, normalization: Normalization) -> None:
    """Refuse an integer raster whose dtype cannot hold the training values (its 1st-99th
    percentiles): a uint8 scene fed to a uint16 reflectance model gives a garbage map, not an
    error, otherwise. Float rasters hold any of these values and pass."""
    if normalization.p1 is None or normalization.p99 is None:
        return
    for i, band in enumerate(spec.bands):  # raster bands only: derived indices follow them
        dtype = np.dtype(src.dtypes[i])
        if dtype.kind not in "iu":
            continue
        info = np.iinfo(dtype)
        low, high = normalization.p1[i], normalization.p99[i]
        if low < info.min or high > info.max:
            raise InputRasterError(
                f"{Path(src.name).name} is {dtype.name} but the model was trained on {spec.dtype} values of {low:g}..{high:g} "
                f"in band {band} (1st-99th percentile), which {dtype.name} cannot hold; give it the {spec.dtype} "
                "(or float) raster at the training's scale"
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
