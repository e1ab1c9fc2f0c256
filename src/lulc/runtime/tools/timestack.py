"""Time-series stacks: dated rasters -> one VRT per band over time + one date-major VRT.

Like NexGenMap's per-band VRT stacking, a stack costs no copy of the pixels when the dates
already share a grid and need no masking: the VRTs only point at the source files. Dates
with a cloud/validity mask band (Landsat ``fmask``), or dates resampled onto the first
date's grid (``--align``), are written once as masked GeoTIFFs under ``dates/``, window by
window, because a plain reader (the runtime, GDAL, QGIS) would otherwise ignore the mask.

The combined ``stack.vrt`` has T x C bands in date-major order, described ``YYYYMMDD_band``,
which is exactly what a temporal bundle lists as ``input.bands``: the runtime reads a stack
like any multi-band raster. The acquisition dates are kept in the ``LULC_DATES`` tag.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window

from lulc.runtime.core.errors import InputRasterError, LulcError, OutputError
from lulc.runtime.io.outputs import check_output_folder, locked, publish_folder, temp_path
from lulc.runtime.io.vrt import write_vrt

logger = logging.getLogger(__name__)

STACK_VRT = "stack.vrt"
#: Fmask codes of usable observations: 0 clear land, 1 clear water (2 shadow, 3 snow, 4 cloud, 255 fill)
FMASK_CLEAR = (0, 1)
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
_LANDSAT_ID = re.compile(r"L[CETMO]\d\d{6}(\d{4})(\d{3})")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
@dataclass
class DatedItem:
    """One acquisition: its date and, per band name, the (file, band index) holding it."""

    date: date
    bands: dict[str, tuple[Path, int]]
    label: str


@dataclass
class StackInfo:
    """What a stack holds: dates, per-date band names, and the date-major channel names."""

    path: Path
    dates: list[str]
    bands: list[str]

    @property
    def channels(self) -> list[str]:
        return channel_names(self.dates, self.bands)


def channel_names(dates: list[str], bands: list[str]) -> list[str]:
    """Date-major band descriptions of a stack: ``20080427_b3, 20080427_b4, ...``."""
    return [f"{d.replace('-', '')}_{b}" for d in dates for b in bands]


def parse_date(name: str) -> date:
    """Acquisition date from a file or folder name: a Landsat scene id, YYYYMMDD or YYYY-MM-DD."""
    m = _LANDSAT_ID.search(name)
    if m:
        return date(int(m[1]), 1, 1) + timedelta(days=int(m[2]) - 1)
    for m in _ISO_DATE.finditer(name):
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            continue
    raise InputRasterError(f"no acquisition date in the name {name!r}; name it with YYYYMMDD or YYYY-MM-DD")


def _band_name(path: Path) -> str:
    """Per-band files are named ``<anything>_<band>.tif`` (``LE7..._b3.tif``) or ``<band>.tif``."""
    return path.stem.rsplit("_", 1)[-1]


def dated_item(path: Path) -> DatedItem:
    """A multi-band raster file (bands named by description) or a folder of per-band files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        if not files:
            raise InputRasterError(f"{path} holds no raster file")
        return DatedItem(parse_date(path.name), {_band_name(f): (f, 1) for f in files}, path.name)
    try:
        with rasterio.open(path) as src:
            names = [d or f"b{i}" for i, d in enumerate(src.descriptions, start=1)]
    except RasterioError as exc:
        raise InputRasterError(f"cannot read {path} as a raster: {exc}") from exc
    return DatedItem(parse_date(path.name), {n: (path, i) for i, n in enumerate(names, start=1)}, path.name)


def collect_items(paths: list[str | Path]) -> list[DatedItem]:
    """Expand the command's arguments into dated items sorted by date.

    One argument that is a folder of dated entries (files or per-date folders) stands for
    all of them; otherwise each argument is one date.
    """
    given = [Path(p) for p in paths]
    for p in given:
        if not p.exists():
            raise InputRasterError(f"input not found: {p}")
    if len(given) == 1 and given[0].is_dir() and not _is_date_folder(given[0]):
        given = sorted(p for p in given[0].iterdir() if p.is_dir() or p.suffix.lower() in RASTER_SUFFIXES)
    items = sorted((dated_item(p) for p in given), key=lambda it: it.date)
    seen = [it.date for it in items]
    dup = sorted({d for d in seen if seen.count(d) > 1})
    if dup:
        raise InputRasterError(f"two inputs have the same date {dup[0]}; one acquisition per date")
    if len(items) < 2:
        raise InputRasterError("a time-series stack needs at least two dates")
    return items


def _is_date_folder(path: Path) -> bool:
    try:
        parse_date(path.name)
    except InputRasterError:
        return False
    return any(p.suffix.lower() in RASTER_SUFFIXES for p in path.iterdir())


def _grid(path: Path) -> tuple:
    with rasterio.open(path) as src:
        return src.crs, src.transform, src.width, src.height


def _masked_date(item: DatedItem, bands: list[str], mask_band: str | None, valid: tuple[int, ...],
                 grid: tuple, nodata: float, dtype: str, out: Path, rows: int = 512) -> None:
    """Write one date's bands onto ``grid`` with nodata where the mask is not clear."""
    crs, transform, width, height = grid
    profile = {"driver": "GTiff", "width": width, "height": height, "count": len(bands), "dtype": dtype,
               "crs": crs, "transform": transform, "nodata": nodata, "tiled": True, "compress": "deflate"}
    sources = [item.bands[b] for b in bands] + ([item.bands[mask_band]] if mask_band else [])
    handles = {p: rasterio.open(p) for p in {s[0] for s in sources}}
    try:
        same = all(_grid(p) == grid for p in handles)
        with rasterio.open(out, "w", **profile) as dst:
            for y0 in range(0, height, rows):
                win = Window(0, y0, width, min(rows, height - y0))
                data = [_read_on_grid(handles[p], b, win, grid, same, i == len(bands))
                        for i, (p, b) in enumerate(sources)]
                block = np.stack(data[: len(bands)])
                if mask_band:
                    block[:, ~np.isin(data[-1], valid)] = nodata
                dst.write(block.astype(dtype), window=win)
            for i, b in enumerate(bands, start=1):
                dst.set_band_description(i, b)
    finally:
        for h in handles.values():
            h.close()


def _read_on_grid(src: rasterio.io.DatasetReader, band: int, win: Window, grid: tuple, same: bool, is_mask: bool) -> np.ndarray:
    if same:
        return src.read(band, window=win)
    crs, transform, width, _ = grid
    out = np.full((int(win.height), width), src.nodata if src.nodata is not None else 0, dtype=src.dtypes[band - 1])
    reproject(rasterio.band(src, band), out, dst_transform=rasterio.windows.transform(win, transform), dst_crs=crs,
              src_nodata=src.nodata, dst_nodata=src.nodata,
              resampling=Resampling.nearest if is_mask else Resampling.bilinear)
    return out


def build_stack(inputs: list[str | Path], output: str | Path, bands: list[str] | None = None,
                mask_band: str | None = None, mask_valid: tuple[int, ...] = FMASK_CLEAR, align: bool = False,
                nodata: float | None = None, overwrite: bool = False) -> StackInfo:
    """Build ``output/`` with ``<band>.vrt`` per band over time and the date-major ``stack.vrt``."""
    items = collect_items(inputs)
    first = items[0]
    bands = bands or [b for b in first.bands if b != mask_band]
    for it in items:
        missing = [b for b in [*bands, *([mask_band] if mask_band else [])] if b not in it.bands]
        if missing:
            raise InputRasterError(f"{it.label} lacks band(s) {', '.join(missing)} (it has {', '.join(it.bands)})")
    grid = _grid(first.bands[bands[0]][0])
    off_grid = [it.label for it in items for b in bands if _grid(it.bands[b][0]) != grid]
    if off_grid and not align:
        raise InputRasterError(f"{off_grid[0]} is not on the grid (CRS, transform, size) of {first.label}; "
                               "pass --align to resample every date onto the first date's grid")
    if off_grid:
        logger.warning("resampling %d date(s) onto the grid of %s (bilinear; masks nearest)", len(set(off_grid)), first.label)
    with rasterio.open(first.bands[bands[0]][0]) as src:
        dtype, nodata = src.dtypes[first.bands[bands[0]][1] - 1], nodata if nodata is not None else src.nodata
    if (mask_band or off_grid) and nodata is None:
        raise InputRasterError("the inputs have no nodata value to mark masked pixels; pass --nodata")

    sources = [*inputs, *(p for it in items for p, _ in it.bands.values())]
    final = check_output_folder(output, sources, overwrite, is_stack, "stack")
    if not final.parent.is_dir():
        raise OutputError(f"cannot write {final}: folder {final.parent} does not exist")
    with locked(final):
        out = temp_path(final, "partial")  # built here, renamed into place when complete
        shutil.rmtree(out, ignore_errors=True)
        try:
            info = _write_stack(out, items, bands, mask_band, tuple(mask_valid), grid, off_grid, dtype, nodata)
            publish_folder(out, final, is_stack, "stack")
        finally:
            shutil.rmtree(out, ignore_errors=True)
    logger.info("stacked %d dates x %d bands into %s", len(info.dates), len(info.bands), final / STACK_VRT)
    return StackInfo(final / STACK_VRT, info.dates, info.bands)


def is_stack(folder: Path) -> bool:
    """Whether ``folder`` is a stack `lulc stack` wrote (its stack.vrt carries the dates)."""
    try:
        read_stack_info(folder)
    except (LulcError, RasterioError, OSError, ValueError):
        return False
    return True


def _write_stack(out: Path, items: list, bands: list[str], mask_band: str | None, mask_valid: tuple[int, ...],
                 grid: tuple, off_grid: list[str], dtype: str, nodata: float | None) -> StackInfo:
    """Write the per-date masked rasters, the per-band VRTs and stack.vrt into ``out``."""
    (out / "dates").mkdir(parents=True)
    dates = [it.date.isoformat() for it in items]
    per_date: list[list[tuple[Path, int]]] = []
    for it in items:
        if mask_band or it.label in off_grid:
            assert nodata is not None  # build_stack refuses masks and warping without one
            path = out / "dates" / f"{it.date:%Y%m%d}.tif"
            _masked_date(it, bands, mask_band, mask_valid, grid, nodata, dtype, path)
            per_date.append([(path, i) for i in range(1, len(bands) + 1)])
        else:
            per_date.append([it.bands[b] for b in bands])
    tags = {"LULC_DATES": json.dumps(dates), "LULC_BANDS": json.dumps(bands),
            "LULC_MASK": json.dumps({"band": mask_band, "clear": list(mask_valid)} if mask_band else None),
            "LULC_CREATED": datetime.now().replace(microsecond=0).isoformat()}
    for ci, b in enumerate(bands):
        write_vrt(out / f"{b}.vrt", grid, dtype, nodata,
                  [(d, *per_date[t][ci]) for t, d in enumerate(dates)], {**tags, "LULC_BANDS": json.dumps([b])})
    names = channel_names(dates, bands)
    sources = [src for srcs in per_date for src in srcs]
    write_vrt(out / STACK_VRT, grid, dtype, nodata, [(n, *s) for n, s in zip(names, sources)], tags)
    return StackInfo(out / STACK_VRT, dates, bands)


def read_stack_info(path: str | Path) -> StackInfo:
    """Dates and bands of a stack (the folder or its ``stack.vrt``, or any raster with the tags)."""
    path = Path(path)
    if path.is_dir():
        path = path / STACK_VRT
    if not path.exists():
        raise InputRasterError(f"time-series stack not found: {path} (build one with `lulc stack`)")
    with rasterio.open(path) as src:
        tags = src.tags()
        count = src.count
    if "LULC_DATES" not in tags:
        raise InputRasterError(f"{path} is not a time-series stack: it has no LULC_DATES tag (build it with `lulc stack`)")
    info = StackInfo(path, json.loads(tags["LULC_DATES"]), json.loads(tags["LULC_BANDS"]))
    if len(info.channels) != count:
        raise InputRasterError(f"{path} has {count} bands, but its tags describe {len(info.channels)}")
    return info
