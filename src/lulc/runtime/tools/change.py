"""From-to change between two class maps: a transition raster and hectares per transition.

Transition codes are ``from * K + to`` for K classes, so the code itself is readable without
a lookup (and unchanged pixels are the codes ``c * (K + 1)``). The legend travels with the
raster as tags (``TRANSITIONS`` JSON and one ``TRANSITION_<code>`` per code) and, when the
codes fit a byte, as a colour table: the *to* class colour for a change, a dark grey for
no change. Maps are compared window by window, so their size is not bounded by memory.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.io.outputs import check_outputs, locked_all, replace_atomically, temp_path
from lulc.runtime.io.rasters import open_raster

UNCHANGED_COLOR = (60, 60, 60)


@dataclass
class ChangeSummary:
    """What ``lulc change`` wrote: the transition raster, its table, the classes and hectares per transition."""
    output: Path
    table: Path
    classes: list[str]
    #: (from, to, pixels, hectares) for every transition present
    rows: list[tuple[str, str, int, float]]


def _legend_tag(src: rasterio.io.DatasetReader, key: str) -> dict:
    """A JSON legend tag keyed by class id: lulc-infer keeps it on band 1 (the class band); maps
    made by other tools may carry it on the dataset. Missing: an empty dict."""
    raw = src.tags(1).get(key) or src.tags().get(key)
    try:
        legend = {int(k): v for k, v in json.loads(raw).items()} if raw else {}
    except (ValueError, AttributeError):
        raise InputRasterError(f"{Path(src.name).name} has an unreadable {key} tag; use class maps written by lulc-infer") from None
    return legend


def _class_names(src: rasterio.io.DatasetReader) -> dict[int, str] | None:
    return {k: str(v) for k, v in _legend_tag(src, "CLASS_NAMES").items()} or None


def shared_classes(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> dict[int, str]:
    """The classes both maps use, pixel value -> name in value order; different lists make
    from-to codes meaningless."""
    names_a, names_b = _class_names(a), _class_names(b)
    if names_a is None or names_b is None:
        missing = Path(a.name if names_a is None else b.name).name
        raise InputRasterError(f"{missing} has no CLASS_NAMES tag; use class maps written by lulc-infer")
    if names_a != names_b:
        only_a = sorted(set(names_a.items()) - set(names_b.items()))
        only_b = sorted(set(names_b.items()) - set(names_a.items()))
        raise InputRasterError(
            f"the maps use different class lists: {Path(a.name).name} has {only_a}, {Path(b.name).name} has {only_b}; "
            "compare maps made with the same class list")
    return {v: names_a[v] for v in sorted(names_a)}


def _check_grids(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> None:
    if (a.crs, a.transform, a.shape) != (b.crs, b.transform, b.shape):
        raise InputRasterError(f"{Path(a.name).name} and {Path(b.name).name} are not on the same grid "
                               "(CRS, transform, size); classify both on one grid")
    if a.crs is None or not a.crs.is_projected:
        raise InputRasterError(f"{Path(a.name).name} is not in a projected CRS; hectares need metres")


def _colormap(classes: list[str], colors: dict[int, list[int]]) -> dict[int, tuple]:
    k = len(classes)
    return {f * k + t: (*(UNCHANGED_COLOR if f == t else colors.get(t, (255, 0, 255))), 255)
            for f in range(k) for t in range(k)}


def detect_change(map_a: str | os.PathLike, map_b: str | os.PathLike, output: str | os.PathLike,
                  table: str | os.PathLike | None = None, overwrite: bool = False) -> ChangeSummary:
    """Write the transition raster ``output`` and a CSV of hectares per transition."""
    paths = check_outputs({"output": output, "table": table or Path(output).with_suffix(".csv")}, [map_a, map_b],
                          overwrite=overwrite)
    final, table = paths["output"], paths["table"]
    with locked_all(paths.values()), open_raster(map_a, "class map") as a, open_raster(map_b, "class map") as b:
        by_value = shared_classes(a, b)
        classes = list(by_value.values())
        # transition codes count classes 0..K-1 whatever values the maps use (lulc-infer keeps
        # the label raster's own codes, e.g. 1..7)
        index = np.full(256, 255, np.int64)
        index[list(by_value)] = np.arange(len(by_value))
        _check_grids(a, b)
        k = len(classes)
        byte = k * k < NODATA_CLASS
        dtype, nodata = ("uint8", NODATA_CLASS) if byte else ("uint16", 65535)
        profile = {"driver": "GTiff", "width": a.width, "height": a.height, "count": 1, "dtype": dtype,
                   "crs": a.crs, "transform": a.transform, "nodata": nodata, "tiled": True, "compress": "deflate"}
        legend = {f * k + t: f"{classes[f]} -> {classes[t]}" for f in range(k) for t in range(k)}
        counts = np.zeros(k * k, dtype=np.int64)
        work = temp_path(final, "partial.tif")
        try:
            with rasterio.open(work, "w", **profile) as dst:
                for _, win in a.block_windows(1):
                    fa, fb = index[a.read(1, window=win)], index[b.read(1, window=win)]
                    ok = (fa < k) & (fb < k)
                    code = np.where(ok, fa * k + fb, nodata)
                    counts += np.bincount(code[ok], minlength=k * k)
                    dst.write(code.astype(dtype), 1, window=win)
                dst.set_band_description(1, "transition")
                dst.update_tags(TRANSITIONS=json.dumps(legend), CLASS_NAMES=json.dumps(dict(enumerate(classes))),
                                CODE="from * K + to", K=str(k), **{f"TRANSITION_{c}": n for c, n in legend.items()})
                if byte:
                    colors = _legend_tag(a, "CLASS_COLORS")
                    dst.write_colormap(1, _colormap(classes, {int(index[v]): colors[v] for v in colors if v in by_value}))
            replace_atomically(work, final)
        finally:
            work.unlink(missing_ok=True)
        hectares = abs(a.transform.a * a.transform.e) * a.crs.linear_units_factor[1] ** 2 / 1e4
        rows = [(classes[c // k], classes[c % k], int(n), round(float(n) * hectares, 4)) for c, n in enumerate(counts) if n]
        _write_table(table, rows, classes)
    return ChangeSummary(final, table, classes, rows)


def _write_table(table: Path, rows: list[tuple[str, str, int, float]], classes: list[str]) -> None:
    """The CSV of hectares per transition, written under a temporary name and renamed."""
    k = len(classes)
    staged = temp_path(table, "partial")
    try:
        with open(staged, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["code", "from", "to", "pixels", "hectares"])
            for f, t, n, ha in rows:
                writer.writerow([classes.index(f) * k + classes.index(t), f, t, n, ha])
        replace_atomically(staged, table)
    finally:
        staged.unlink(missing_ok=True)
