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


def read_features(vector: str | os.PathLike, dst_crs, column: str | None) -> tuple[list[dict], list]:
    """Geometries (reprojected to ``dst_crs``) and their ``column`` values."""
    import fiona
    from fiona.transform import transform_geom

    try:
        with fiona.open(vector) as src:
            if column is not None and column not in src.schema["properties"]:
                raise LulcError(
                    f"{Path(vector).name} has no column '{column}' (columns: {', '.join(src.schema['properties'])}); "
                    "name the class column with --label-column"
                )
            src_crs = src.crs
            feats = [(f.geometry, f.properties[column] if column else None) for f in src if f.geometry is not None]
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
    image,
    out: str | os.PathLike,
    column: str = "class",
    class_names: list[str] | None = None,
) -> list[str]:
    """Burn ``column`` of ``vector`` onto the grid of ``image``; return the class names.

    ``image`` is a raster path or an open grid (anything with crs, bounds, width, height and
    transform, such as a :class:`~lulc.training.sources.RasterStack`). Points burn one pixel.
    """
    from shapely.geometry import box, shape

    if isinstance(image, (str, os.PathLike)):
        with rasterio.open(image) as ref:
            return rasterize_vector(vector, ref, out, column, class_names)
    name = Path(getattr(image, "name", "the image")).name
    geoms, values = read_features(vector, image.crs, column)
    names, lookup = class_index(values, class_names)
    extent = box(*image.bounds)
    inside = [extent.intersects(shape(g)) for g in geoms]
    outside = inside.count(False)
    if outside == len(geoms):
        raise LulcError(f"none of the {len(geoms)} features of {Path(vector).name} overlap {name}; check their CRS and extent")
    if outside:
        logger.warning("%d of %d label features lie outside %s and were skipped", outside, len(geoms), name)
    shapes = [(g, lookup[str(v)]) for g, v, ok in zip(geoms, values, inside) if ok and v is not None]
    burnt = rasterize(shapes, out_shape=(image.height, image.width), transform=image.transform,
                      fill=IGNORE, dtype="uint8")
    if not (burnt != IGNORE).any():
        raise LulcError(f"rasterizing {Path(vector).name} labelled no pixel of {name}")
    write_label_raster(out, burnt, image, names)
    return names


def write_label_raster(out: str | os.PathLike, labels: np.ndarray, grid, names: list[str] | None = None) -> None:
    """Write a uint8 label raster on ``grid`` atomically, class names in its tags."""
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint8",
               "crs": grid.crs, "transform": grid.transform, "nodata": IGNORE, "compress": "deflate"}
    tmp = Path(str(out) + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(labels, 1)
        if names:
            dst.update_tags(CLASS_NAMES=json.dumps(names))
    os.replace(tmp, out)


def aoi_mask(aoi: str | os.PathLike, grid) -> np.ndarray:
    """(H, W) bool: True inside the area-of-interest polygons (reprojected to the grid's CRS)."""
    from rasterio.features import geometry_mask

    geoms, _ = read_features(aoi, grid.crs, None)
    mask = geometry_mask(geoms, out_shape=(grid.height, grid.width), transform=grid.transform, invert=True)
    if not mask.any():
        raise LulcError(f"the area of interest {Path(aoi).name} does not overlap the image; check its CRS and extent")
    return mask


def label_classes(labels: str | os.PathLike, classes_file: str | os.PathLike | None = None) -> list[dict]:
    """Class list for a label raster: an explicit JSON file, a ``classes.json`` beside it, or its tags."""
    labels = Path(labels)
    candidates = [Path(classes_file)] if classes_file else [labels.with_name("classes.json")]
    for path in candidates:
        if path.is_file():
            entries = json.loads(path.read_text())
            return [{"id": i, "name": e["name"], "color": tuple(e.get("color") or DEFAULT_COLORS[i % len(DEFAULT_COLORS)])}
                    for i, e in enumerate(entries)]
    from lulc.training.sources import open_raster

    with open_raster(labels, "label raster") as src:
        tagged = src.tags().get("CLASS_NAMES")
        if tagged:
            names = json.loads(tagged)
        else:
            ids = np.unique(src.read(1))
            ids = ids[ids != IGNORE]
            if not ids.size:
                raise LulcError(f"label raster {labels.name} is empty: every pixel is unlabeled ({IGNORE})")
            names = [f"class_{i}" for i in range(int(ids.max()) + 1)]
    return [{"id": i, "name": n, "color": DEFAULT_COLORS[i % len(DEFAULT_COLORS)]} for i, n in enumerate(names)]


def prepare_labels(
    labels: str | os.PathLike,
    grid,
    staging: Path,
    column: str = "class",
    classes_file: str | os.PathLike | None = None,
    aoi: str | os.PathLike | None = None,
    align: bool = False,
) -> tuple[Path, list[dict]]:
    """A label raster on the grid of ``grid`` (a RasterStack) and its class list.

    Vector labels are rasterized, a label raster on another grid is warped (nearest, only
    with ``align``) and an area of interest blanks everything outside it; each of these
    writes a new label raster into ``staging``, so the user's files are never modified.
    """
    from rasterio.vrt import WarpedVRT

    from lulc.runtime.bandstack import same_grid
    from lulc.training.sources import open_raster

    staged = staging / "labels.tif"
    if is_vector(labels):
        names = [c["name"] for c in label_classes(labels, classes_file)] if classes_file else None
        rasterize_vector(labels, grid, staged, column=column, class_names=names)
        path, classes = staged, label_classes(staged, classes_file)
    else:
        path, classes = Path(labels), label_classes(labels, classes_file)
    with open_raster(path, "label raster") as src:
        on_grid = same_grid(src, grid)
        if on_grid:
            plane = src.read(1)
        elif align:
            with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                           resampling=rasterio.enums.Resampling.nearest, nodata=IGNORE) as vrt:
                plane = vrt.read(1)
        else:
            raise LulcError(f"label raster {path} is not on the grid of the image; pass --align to warp it "
                            "(nearest neighbour) or rasterize the labels onto the image grid")
    if aoi:
        plane = np.where(aoi_mask(aoi, grid), plane, IGNORE).astype(np.uint8)
    ids = np.unique(plane)
    ids = ids[ids != IGNORE]
    if not ids.size:
        raise LulcError(f"the label set is empty: no labelled pixel of {Path(labels).name} falls on the image"
                        + (" inside the area of interest" if aoi else ""))
    unknown = ids[ids >= len(classes)]
    if unknown.size:
        raise LulcError(f"label value(s) {', '.join(map(str, unknown))} are not in the class list of {len(classes)} "
                        "classes; add them to classes.json (--classes) or relabel")
    if aoi or not on_grid:
        write_label_raster(staged, plane, grid, [c["name"] for c in classes])
        path = staged
    return path, classes
