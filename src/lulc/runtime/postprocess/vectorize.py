"""Polygons of a class map: one per region, streamed, regions across strip edges kept whole.

``rasterio.features.shapes`` needs the whole band in memory. Here the map is read strip by
strip twice: the first pass labels its regions (4-connected, as ``shapes`` by default, with
the union–find of :mod:`lulc.runtime.postprocess.sieve`) and notes each region's size and
last row; the second labels them again, traces each strip's pieces of each region with
``shapes`` on the region labels (in pixel coordinates, where the pieces of one region share
their edges exactly), joins the pieces of a region once its last row has been read, and
writes it at once. Memory holds the regions still open at the current strip, not the map.

Each polygon carries the class value, the class name, its pixel count and area in hectares;
``simplify`` (map units) simplifies each polygon on its own (neighbours may then leave slivers
between them; without it the polygons tile the map exactly).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import rasterio
from numba import njit
from rasterio.windows import Window

from lulc.runtime.core.errors import LulcError
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.postprocess.sieve import _Labels, _passes, roots_of

STRIP_ROWS = 512


def _shapely() -> tuple:
    try:
        import shapely
        from shapely.geometry import mapping, shape
    except ImportError:
        raise LulcError("polygons need shapely and fiona: pip install 'lulc[vector]'") from None
    return shapely, shape, mapping


@njit(nogil=True, cache=True)
def _note_rows(ids: np.ndarray, row0: int, last: np.ndarray) -> None:
    """last[label] = the last row it occurs in (rows come in order)."""
    for y in range(ids.shape[0]):
        for x in range(ids.shape[1]):
            if ids[y, x] >= 0:
                last[ids[y, x]] = row0 + y


def _last_rows(labels: _Labels, strips: Callable[[], Iterator[tuple[int, np.ndarray]]], width: int) -> np.ndarray:
    """The last row of each label (the first pass, which also labels)."""
    last = np.full(1024, -1, np.int64)
    for row, _, ids, _, _ in _passes(strips, width, NODATA_CLASS, False, labels):
        if len(last) < labels.used:
            last = np.concatenate([last, np.full(max(labels.used, 2 * len(last)) - len(last), -1, np.int64)])
        _note_rows(ids, row, last)
    return last[: labels.used]


def polygons(source: str | Path, names: dict[int, str]) -> Iterator[tuple[dict, int, int]]:
    """(GeoJSON polygon in map coordinates, class value, pixels) for every region of band 1."""
    shapely, shape, mapping = _shapely()
    from rasterio.features import shapes

    with rasterio.open(source) as src:
        width, transform = src.width, src.transform

        def strips() -> Iterator[tuple[int, np.ndarray]]:
            for r0 in range(0, src.height, STRIP_ROWS):
                yield r0, src.read(1, window=Window(0, r0, width, min(STRIP_ROWS, src.height - r0)))

        labels = _Labels(width)
        last = _last_rows(labels, strips, width)
        labels.trimmed()
        region = roots_of(labels.parent, labels.sizes)
        end = np.full(len(region), -1, np.int64)
        np.maximum.at(end, region, last)  # a region's last row: the last of its labels'
        pieces: dict[int, list] = {}
        slot = np.full(len(region), -1, np.int32)  # region -> its number in the current strip
        for row, rows, ids, _, _ in _passes(strips, width, NODATA_CLASS, False, None):
            compact = np.empty(ids.shape, np.int32)
            local = _compact(ids, region, slot, compact)
            shifted = rasterio.Affine.translation(0, row)
            bottom = row + rows.shape[0]
            for geometry, value in shapes(compact, mask=compact >= 0, connectivity=4, transform=shifted):
                r = int(local[int(value)])
                if end[r] < bottom and r not in pieces:  # a region wholly in this strip: out at once
                    yield _placed(geometry, transform), int(labels.values[r]), int(labels.sizes[r])
                else:
                    pieces.setdefault(r, []).append(geometry)
            slot[local] = -1
            done = [r for r in pieces if end[r] < bottom]
            for r in sorted(done):
                parts = pieces.pop(r)
                # most regions lie in one strip: their piece is the polygon, only moved to the map
                joined = parts[0] if len(parts) == 1 else mapping(shapely.union_all([shape(p) for p in parts]))
                yield _placed(joined, transform), int(labels.values[r]), int(labels.sizes[r])


@njit(nogil=True, cache=True)
def _compact(ids: np.ndarray, region: np.ndarray, slot: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out``: each pixel's region numbered 0.. in order of appearance in the strip (-1:
    nodata), for ``shapes`` (int32 values); returns the regions in that order."""
    found: list[int] = []
    for y in range(ids.shape[0]):
        for x in range(ids.shape[1]):
            i = ids[y, x]
            if i < 0:
                out[y, x] = -1
                continue
            r = region[i]
            if slot[r] < 0:
                slot[r] = len(found)
                found.append(r)
            out[y, x] = slot[r]
    return np.array(found, dtype=np.int64) if found else np.zeros(0, np.int64)


def _placed(geometry: dict, transform: rasterio.Affine) -> dict:
    """A polygon in pixel coordinates moved to map coordinates by ``transform``."""
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    moved = []
    for polygon in polygons:
        rings = []
        for ring in polygon:
            xy = np.asarray(ring, np.float64)
            xs = transform.a * xy[:, 0] + transform.b * xy[:, 1] + transform.c
            ys = transform.d * xy[:, 0] + transform.e * xy[:, 1] + transform.f
            rings.append(list(zip(xs.tolist(), ys.tolist())))
        moved.append(rings)
    return {"type": geometry["type"], "coordinates": moved if geometry["type"] == "MultiPolygon" else moved[0]}


def write_polygons(source: str | Path, out: Path, layer: str, crs: rasterio.crs.CRS, names: dict[int, str],
                   pixel_ha: float, simplify: float = 0.0) -> int:
    """Write the regions of ``source`` as polygons to the GeoPackage ``out``; returns how many."""
    from lulc.runtime.io.vector import _fiona

    fiona = _fiona()
    shapely, shape, mapping = _shapely()
    schema = {"geometry": "Polygon", "properties": {"class": "int", "class_name": "str", "pixels": "int",
                                                    "area_ha": "float"}}
    count = 0
    with fiona.open(out, "w", driver="GPKG", crs_wkt=crs.to_wkt(), layer=layer, schema=schema) as dst:
        batch = []
        for geometry, value, pixels in polygons(source, names):
            if simplify:
                geometry = mapping(shape(geometry).simplify(simplify, preserve_topology=True))
            batch.append({"geometry": geometry, "properties": {"class": value, "class_name": names.get(value, str(value)),
                                                              "pixels": pixels, "area_ha": round(pixels * pixel_ha, 6)}})
            if len(batch) == 4096:  # one GeoPackage transaction per batch, not per polygon
                dst.writerecords(batch)
                count, batch = count + len(batch), []
        dst.writerecords(batch)
    return count + len(batch)


def write_vector(class_map: str | Path, out: Path, final: Path, simplify: float = 0.0) -> int:
    """The polygons of the class map ``class_map`` (its classes from its tags) to ``out``,
    a failed write one line about ``final`` (the GeoPackage's published name)."""
    from lulc.runtime.assess.maps import map_classes
    from lulc.runtime.io.space import write_error

    with rasterio.open(class_map) as src:
        names = map_classes(src).names
        crs = src.crs
        projected = crs is not None and crs.is_projected
        pixel_ha = abs(src.transform.a * src.transform.e) * (crs.linear_units_factor[1] ** 2 if projected else 0) / 1e4
    try:
        return write_polygons(class_map, out, Path(final).stem, crs, names, pixel_ha, simplify)
    except OSError as exc:
        out.unlink(missing_ok=True)
        raise write_error(Path(final), exc) from exc
