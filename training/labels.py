"""Labels as rasters on the image grid: rasterize vector files, read label rasters, class lists.

A vector file (GeoPackage, Shapefile, GeoJSON) is reprojected to the image CRS and burnt
onto its grid with rasterio.features; pixels without a label get the ignore value, which
the loss and the metrics skip. Features outside the image are counted and reported.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize

from lulc.runtime.errors import LulcError

logger = logging.getLogger(__name__)

IGNORE = 255
DEFAULT_COLORS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]


def is_vector(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml"}


def read_features(vector: str | os.PathLike, dst_crs, column: str) -> tuple[list[dict], list]:
    """Geometries (reprojected to ``dst_crs``) and their ``column`` values."""
    import fiona
    from fiona.transform import transform_geom

    try:
        with fiona.open(vector) as src:
            if column not in src.schema["properties"]:
                raise LulcError(
                    f"{Path(vector).name} has no column '{column}' (columns: {', '.join(src.schema['properties'])}); "
                    "name the class column with --label-column"
                )
            src_crs = src.crs
            feats = [(f.geometry, f.properties[column]) for f in src if f.geometry is not None]
    except (fiona.errors.FionaError, fiona.errors.DriverError) as exc:
        raise LulcError(f"cannot read vector labels {vector}: {exc}") from exc
    if not feats:
        raise LulcError(f"{Path(vector).name} contains no features with geometry")
    geoms = [dict(g.__geo_interface__) if hasattr(g, "__geo_interface__") else g for g, _ in feats]
    if src_crs and dst_crs and src_crs != dst_crs:
        logger.info("reprojecting labels from %s to %s", src_crs, dst_crs)
        geoms = [transform_geom(src_crs, dst_crs, g) for g in geoms]
    return geoms, [v for _, v in feats]


def class_index(values: list, class_names: list[str] | None) -> tuple[list[str], dict]:
    names = class_names or sorted({str(v) for v in values if v is not None})
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in values if v is not None and str(v) not in lookup})
    if unknown:
        raise LulcError(
            f"label classes {', '.join(unknown)} are not in the class list ({', '.join(names)}); add them to the class list"
        )
    return names, lookup


def rasterize_vector(
    vector: str | os.PathLike,
    image: str | os.PathLike,
    out: str | os.PathLike,
    column: str = "class",
    class_names: list[str] | None = None,
) -> list[str]:
    """Burn ``column`` of ``vector`` onto the grid of ``image``; return the class names."""
    from shapely.geometry import box, shape

    with rasterio.open(image) as ref:
        geoms, values = read_features(vector, ref.crs, column)
        names, lookup = class_index(values, class_names)
        extent = box(*ref.bounds)
        inside = [extent.intersects(shape(g)) for g in geoms]
        outside = inside.count(False)
        if outside == len(geoms):
            raise LulcError(f"none of the {len(geoms)} features of {Path(vector).name} overlap {Path(image).name}; check their CRS and extent")
        if outside:
            logger.warning("%d of %d label features lie outside %s and were skipped", outside, len(geoms), Path(image).name)
        shapes = [(g, lookup[str(v)]) for g, v, ok in zip(geoms, values, inside) if ok and v is not None]
        burnt = rasterize(shapes, out_shape=(ref.height, ref.width), transform=ref.transform,
                          fill=IGNORE, dtype="uint8")
        profile = {"driver": "GTiff", "width": ref.width, "height": ref.height, "count": 1, "dtype": "uint8",
                   "crs": ref.crs, "transform": ref.transform, "nodata": IGNORE, "compress": "deflate"}
    if not (burnt != IGNORE).any():
        raise LulcError(f"rasterizing {Path(vector).name} labelled no pixel of {Path(image).name}")
    tmp = Path(str(out) + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(burnt, 1)
        dst.update_tags(CLASS_NAMES=json.dumps(names))
    os.replace(tmp, out)
    return names


def label_classes(labels: str | os.PathLike, classes_file: str | os.PathLike | None = None) -> list[dict]:
    """Class list for a label raster: an explicit JSON file, a ``classes.json`` beside it, or its tags."""
    labels = Path(labels)
    candidates = [Path(classes_file)] if classes_file else [labels.with_name("classes.json")]
    for path in candidates:
        if path.is_file():
            entries = json.loads(path.read_text())
            return [{"id": i, "name": e["name"], "color": tuple(e.get("color") or DEFAULT_COLORS[i % len(DEFAULT_COLORS)])}
                    for i, e in enumerate(entries)]
    with rasterio.open(labels) as src:
        tagged = src.tags().get("CLASS_NAMES")
        if tagged:
            names = json.loads(tagged)
        else:
            ids = np.unique(src.read(1))
            names = [f"class_{i}" for i in range(int(ids[ids != IGNORE].max()) + 1)]
    return [{"id": i, "name": n, "color": DEFAULT_COLORS[i % len(DEFAULT_COLORS)]} for i, n in enumerate(names)]
