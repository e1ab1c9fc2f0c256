"""A reference sample as the estimators need it: counts of (stratum, map class, reference class).

The reference is points or polygons (a vector file or a CSV of x/y) or a label raster on the
map's grid. Every sample unit is located on the map (a point is the pixel it falls in, a
polygon every pixel whose centre it covers, a label raster every labelled pixel), and then
only counted, so a reference of millions of labelled pixels costs no memory. Units outside
the map, on its nodata, unlabelled, or outside the strata are counted and reported, never
silently dropped; a reference class the map does not know is one line naming it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds

from lulc.runtime.assess.maps import MapClasses, map_classes
from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.rasters import open_raster
from lulc.runtime.io.vector import Features, read_features

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


@dataclass
class Tally:
    """Sample counts n[h, i, j] (stratum, map class, reference class) and what was left out."""

    counts: np.ndarray
    units: int = 0
    outside: int = 0
    on_nodata: int = 0
    unlabelled: int = 0
    off_strata: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def used(self) -> int:
        return int(self.counts.sum())

    def skipped(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.outside, "outside the map"), (self.on_nodata, "on map nodata"),
                                                (self.unlabelled, "without a class"),
                                                (self.off_strata, "outside the strata")) if n]
        return ", ".join(parts)


class Labels:
    """Reference class labels -> class indices of the map: by name (case and spaces ignored),
    or by pixel value where the labels are numbers."""

    def __init__(self, classes: MapClasses, source: str):
        self.classes, self.source = classes, source
        self.by_name = {name.strip().lower(): i for i, name in enumerate(classes.names.values())}
        self.by_value = {value: i for i, value in enumerate(classes.values)}

    def index(self, labels: list) -> np.ndarray:
        """Class index per label, -1 for an empty label; an unknown label stops with one line."""
        out = np.full(len(labels), -1, np.int64)
        unknown: dict[str, int] = {}
        for n, label in enumerate(labels):
            text = "" if label is None else str(label).strip()
            if not text:
                continue
            found = self.by_name.get(text.lower())
            if found is None and _is_int(text):
                found = self.by_value.get(int(float(text)))
            if found is None:
                unknown[text] = unknown.get(text, 0) + 1
            else:
                out[n] = found
        if unknown:
            label, count = next(iter(unknown.items()))
            others = f" (and {len(unknown) - 1} other unknown classes)" if len(unknown) > 1 else ""
            raise InputRasterError(
                f"reference class {label!r} ({count} samples in {self.source}){others} is not a class of the map; its "
                f"classes are {', '.join(self.classes.names.values())} (values {', '.join(map(str, self.classes.values))})")
        return out


def _is_int(text: str) -> bool:
    try:
        return float(text).is_integer()
    except ValueError:
        return False


def sample_points(src: rasterio.io.DatasetReader, xs: np.ndarray, ys: np.ndarray,
                  crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """(which points, given in ``crs``, fall on ``src``; band 1's values there)."""
    xs, ys = np.atleast_1d(np.asarray(xs, np.float64)), np.atleast_1d(np.asarray(ys, np.float64))
    if len(xs) and crs != src.crs:
        xs, ys = map(np.asarray, transform_points(crs, src.crs, xs, ys))
    rows, cols = rasterio.transform.rowcol(src.transform, xs, ys) if len(xs) else ([], [])
    rows, cols = np.atleast_1d(rows), np.atleast_1d(cols)
    inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
    values = np.array([v[0] for v in src.sample(zip(xs[inside], ys[inside]))], np.int64).reshape(-1)
    return inside, values


class Strata:
    """The strata of a Stehman design: a raster of stratum codes (nodata: no stratum)."""

    def __init__(self, src: rasterio.io.DatasetReader, values: list[int]):
        self.src, self.values = src, values
        self.lut = np.full(65536, -1, np.int64)
        self.lut[values] = np.arange(len(values))

    def at(self, xs: np.ndarray, ys: np.ndarray, crs: CRS) -> np.ndarray:
        """Stratum index at points (in ``crs``), -1 outside the strata."""
        out = np.full(len(xs), -1, np.int64)
        inside, values = sample_points(self.src, xs, ys, crs)
        if self.src.nodata is not None:
            values[values == int(self.src.nodata)] = 65535
        out[inside] = self.lut[np.clip(values, 0, 65535)]
        return out


def tally(map_src: rasterio.io.DatasetReader, reference: str | os.PathLike, class_field: str | None,
          strata: Strata | None, crs: CRS | None = None, x_field: str = "x", y_field: str = "y",
          labels_from: str | os.PathLike | None = None) -> Tally:
    """Count the reference sample against the map (and the strata, where given). With
    ``labels_from`` the sample's points take their reference class from that label raster
    (a reference layer read at a designed sample) instead of a field."""
    classes = map_classes(map_src)
    q = len(classes.values)
    result = Tally(np.zeros((len(strata.values) if strata else q, q, q), np.int64))
    path = Path(reference)
    if path.suffix.lower() in RASTER_SUFFIXES:
        _tally_raster(result, map_src, classes, path, strata)
    else:
        features = read_features(path, crs, x_field, y_field)
        if not features.geometries:
            raise InputRasterError(f"reference {path} holds no features")
        features = _in_map_crs(features, map_src.crs, path, result)
        if labels_from is None:
            field_name = _class_field(features, class_field, path)
            labels = Labels(classes, path.name).index([p.get(field_name) for p in features.properties])
        else:
            labels = _labels_from(features, Path(labels_from), classes, map_src.crs)
        for geometry, label in zip(features.geometries, labels):
            result.units += 1
            xs, ys = _unit_centres(map_src, geometry)
            if label < 0:
                result.unlabelled += 1 if geometry["type"] == "Point" else max(1, len(xs))
                continue
            _add_units(result, map_src, classes, xs, ys, label, strata, geometry["type"] == "Point")
    if not result.used:
        raise InputRasterError(f"no reference sample of {path.name} falls on a classified pixel of the map "
                               f"({result.skipped() or 'it holds no labelled sample'})")
    return result


def _labels_from(features: Features, path: Path, classes: MapClasses, crs: CRS) -> np.ndarray:
    if any(g["type"] != "Point" for g in features.geometries):
        raise InputRasterError("--labels-from reads a label raster at points; the reference holds other geometries")
    with open_raster(path, "label raster") as src:
        xs = np.array([g["coordinates"][0] for g in features.geometries], np.float64)
        ys = np.array([g["coordinates"][1] for g in features.geometries], np.float64)
        return LabelRaster(src, classes, path.name).at(xs, ys, crs)


def _class_field(features: Features, class_field: str | None, path: Path) -> str:
    fields = list(features.properties[0]) if features.properties else []
    if class_field is None:
        for guess in ("class", "reference", "label", "ref_class"):
            if guess in fields:
                return guess
        raise InputRasterError(f"{path.name}: name the field holding each sample's class with --class-field "
                               f"(fields: {', '.join(fields) or 'none'})")
    if class_field not in fields:
        raise InputRasterError(f"{path.name} has no field {class_field!r} (fields: {', '.join(fields) or 'none'})")
    return class_field


def _in_map_crs(features: Features, map_crs: CRS, path: Path, result: Tally) -> Features:
    """The features in the map's CRS: reprojected, and said so, where theirs differs."""
    if features.crs is None:
        result.notes.append(f"{path.name} has no CRS; its coordinates are taken to be in the map's ({map_crs.to_string()})")
        return features
    if features.crs == map_crs:
        return features
    result.notes.append(f"reprojected {path.name} from {features.crs.to_string()} to the map's {map_crs.to_string()}")
    logger.warning(result.notes[-1])
    return Features(map_crs, [transform_geom(features.crs, map_crs, g) for g in features.geometries], features.properties)


def _unit_centres(src: rasterio.io.DatasetReader, geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    """A point, or the centres of the map pixels a polygon covers (clipped to the map)."""
    if geometry["type"] == "Point":
        x, y = geometry["coordinates"][:2]
        return np.array([x], np.float64), np.array([y], np.float64)
    xs_all = [c[0] for ring in _rings(geometry) for c in ring]
    ys_all = [c[1] for ring in _rings(geometry) for c in ring]
    window = from_bounds(min(xs_all), min(ys_all), max(xs_all), max(ys_all), src.transform)
    window = window.round_offsets().round_lengths().intersection(Window(0, 0, src.width, src.height)) \
        if _overlaps(window, src) else None
    if window is None or window.width < 1 or window.height < 1:
        return np.zeros(0), np.zeros(0)
    inside = ~geometry_mask([geometry], (int(window.height), int(window.width)),
                            src.window_transform(window), all_touched=False)
    rows, cols = np.nonzero(inside)
    xs, ys = rasterio.transform.xy(src.window_transform(window), rows, cols)
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64)


def _overlaps(window: Window, src: rasterio.io.DatasetReader) -> bool:
    return (window.col_off < src.width and window.row_off < src.height
            and window.col_off + window.width > 0 and window.row_off + window.height > 0)


def _rings(geometry: dict) -> Iterator[list]:
    coords = geometry["coordinates"]
    polygons = coords if geometry["type"] == "MultiPolygon" else [coords]
    for polygon in polygons:
        yield from polygon


def _add_units(result: Tally, src: rasterio.io.DatasetReader, classes: MapClasses, xs: np.ndarray, ys: np.ndarray,
               label: int, strata: Strata | None, point: bool) -> None:
    """Locate units on the map and count them under their map class, stratum and ``label``."""
    if len(xs) == 0:
        result.outside += 1  # a polygon that covers no pixel centre of the map
        return
    inside, values = sample_points(src, xs, ys, src.crs)
    result.outside += int((~inside).sum())
    mapped = classes.index()[np.clip(values, 0, 65535)]
    result.on_nodata += int((mapped < 0).sum())
    keep = mapped >= 0
    stratum = strata.at(xs[inside][keep], ys[inside][keep], src.crs) if strata else mapped[keep]
    result.off_strata += int((stratum < 0).sum())
    good = stratum >= 0
    np.add.at(result.counts, (stratum[good], mapped[keep][good], np.full(int(good.sum()), label)), 1)


class LabelRaster:
    """Reference classes read from a label raster: by its own class names where it has them
    (values it does not name are unlabelled), else its values are the map's values."""

    def __init__(self, src: rasterio.io.DatasetReader, classes: MapClasses, source: str):
        self.src = src
        try:
            self.named: dict[int, str] | None = map_classes(src).names
        except InputRasterError:  # a plain label raster
            self.named = None
        self.labels = Labels(classes, source)
        self.lut = np.full(65536, -2, np.int64)  # -2: not met yet, -1: no class
        if src.nodata is not None:
            self.lut[int(src.nodata)] = -1

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Class index of label values (-1: no class); a label the map lacks is one line."""
        values = np.clip(values.astype(np.int64), 0, 65535)
        new = np.unique(values[self.lut[values] == -2])
        if len(new):
            self.lut[new] = self.labels.index([str(v) if self.named is None else self.named.get(int(v), "") for v in new])
        return self.lut[values]

    def at(self, xs: np.ndarray, ys: np.ndarray, crs: CRS) -> np.ndarray:
        """Class index at points (in ``crs``), -1 outside the raster or unlabelled."""
        out = np.full(len(xs), -1, np.int64)
        inside, values = sample_points(self.src, xs, ys, crs)
        out[inside] = self.lookup(values)
        return out


def _tally_raster(result: Tally, src: rasterio.io.DatasetReader, classes: MapClasses, path: Path,
                  strata: Strata | None) -> None:
    """A label raster on the map's grid: every labelled pixel is a unit, streamed by blocks."""
    with open_raster(path, "reference raster") as ref:
        if (ref.crs, ref.transform, ref.shape) != (src.crs, src.transform, src.shape):
            raise InputRasterError(f"reference raster {path.name} is not on the map's grid (CRS, transform, size); "
                                   "warp it onto the map's grid first (gdalwarp -r near), or give points")
        reference = LabelRaster(ref, classes, path.name)
        for _, window in src.block_windows(1):
            values = ref.read(1, window=window)
            label = reference.lookup(values)
            labelled = values != _nodata(ref)
            result.units += int(labelled.sum())
            result.unlabelled += int((labelled & (label < 0)).sum())
            mapped = classes.index()[src.read(1, window=window).astype(np.int64)]
            use = label >= 0
            result.on_nodata += int((use & (mapped < 0)).sum())
            use &= mapped >= 0
            stratum = mapped if strata is None else _strata_block(strata, src, window, use)
            result.off_strata += int((use & (stratum < 0)).sum())
            use &= stratum >= 0
            np.add.at(result.counts, (stratum[use], mapped[use], label[use]), 1)


def _nodata(src: rasterio.io.DatasetReader) -> int:
    return int(src.nodata) if src.nodata is not None else -1


def _strata_block(strata: Strata, src: rasterio.io.DatasetReader, window: Window, use: np.ndarray) -> np.ndarray:
    """Stratum index of the map block's pixels where ``use`` (-1 elsewhere)."""
    rows, cols = np.nonzero(use)
    xs, ys = rasterio.transform.xy(src.window_transform(window), rows, cols)
    stratum = np.full(use.shape, -1, np.int64)
    stratum[rows, cols] = strata.at(np.asarray(xs, np.float64), np.asarray(ys, np.float64), src.crs)
    return stratum
