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

from lulc.runtime.core.errors import LulcError
from lulc.runtime.io.bandstack import same_grid
from lulc.training.classes import class_list, raster_classes, read_class_file
from lulc.training.sources import open_raster

logger = logging.getLogger(__name__)

IGNORE = 255


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


def _class_plane(src, grid, align: bool) -> np.ndarray:
    """Band 1 of ``src`` on the grid of ``grid`` (warped by nearest neighbour only with ``align``)."""
    from rasterio.vrt import WarpedVRT


    if same_grid(src, grid):
        return src.read(1)
    if not align:
        raise LulcError(f"label raster {src.name} is not on the grid of the image; pass --align to warp it "
                        "(nearest neighbour) or rasterize the labels onto the image grid")
    with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                   resampling=rasterio.enums.Resampling.nearest, nodata=src.nodata) as vrt:
        return vrt.read(1)


def _labelled(plane: np.ndarray, nodata) -> np.ndarray:
    """True where a pixel holds a class: not the ignore value, the raster's nodata or NaN."""
    labelled = plane != IGNORE
    if nodata is not None:
        labelled &= plane != nodata
    if plane.dtype.kind == "f":
        labelled &= ~np.isnan(plane)
    return labelled


def _to_class_ids(plane: np.ndarray, labelled: np.ndarray, classes: list[dict]) -> np.ndarray:
    """uint8 model class ids (0..K-1, IGNORE elsewhere) from the raster's own values."""
    values = np.array([c["value"] for c in classes])
    order = np.argsort(values)
    pos = np.clip(np.searchsorted(values[order], plane), 0, len(values) - 1)
    return np.where(labelled, order[pos], IGNORE).astype(np.uint8)


def prepare_labels(
    labels: str | os.PathLike,
    grid,
    staging: Path,
    column: str = "class",
    classes_file: str | os.PathLike | None = None,
    aoi: str | os.PathLike | None = None,
    align: bool = False,
    known: list[dict] | None = None,
) -> tuple[Path, list[dict]]:
    """A label raster of model class ids on the grid of ``grid`` (a RasterStack), and its classes.

    Vector labels are rasterized, a label raster on another grid is warped (nearest, only
    with ``align``), an area of interest blanks everything outside it, and the raster's own
    values become class ids 0..K-1 (see :mod:`lulc.training.classes`; ``known`` imposes a
    bundle's classes, for evaluation). The result is written into ``staging``, so the user's
    files are never modified. Training needs two classes present; evaluation does not.
    """

    staged = staging / "labels.tif"
    class_file = Path(classes_file) if classes_file else Path(labels).with_name("classes.json")
    classes = known or (read_class_file(class_file) if class_file.is_file() else None)
    path, burnt = Path(labels), None
    if is_vector(labels):
        names = rasterize_vector(labels, grid, staged, column=column,
                                 class_names=[c["name"] for c in classes] if classes else None)
        classes = classes or class_list([(i, n, None) for i, n in enumerate(names)])
        burnt = [{**c, "value": i} for i, c in enumerate(classes)]  # rasterizing burns list positions
        path = staged
    with open_raster(path, "label raster") as src:
        plane = _class_plane(src, grid, align)
        labelled = _labelled(plane, src.nodata)
        if aoi:
            labelled &= aoi_mask(aoi, grid)
        values = np.unique(plane[labelled])
        if not values.size:
            raise LulcError(f"the label set is empty: no labelled pixel of {Path(labels).name} falls on the image"
                            + (" inside the area of interest" if aoi else ""))
        if values.dtype.kind == "f" and (values != np.round(values)).any():
            raise LulcError(f"label raster {path.name} holds non-integer values (e.g. {values[values != np.round(values)][0]}); "
                            "labels must be integer class codes")
        classes = classes or raster_classes(src, path, values.astype(np.int64))
    burnt = burnt or classes
    unknown = sorted(set(values.astype(np.int64).tolist()) - {c["value"] for c in burnt})
    if unknown:
        raise LulcError(f"label value(s) {', '.join(map(str, unknown[:10]))} are not in the class list of {len(classes)} "
                        "classes; add them to classes.json (--classes) or relabel")
    if known is None and values.size < 2:
        raise LulcError(f"the labels hold a single class (value {int(values[0])}); a classifier needs at least two "
                        "classes: label some pixels of another class")
    if len(classes) < 2:
        raise LulcError(f"the class list has only {len(classes)} class; a classifier needs at least two")
    write_label_raster(staged, _to_class_ids(plane, labelled, burnt), grid, [c["name"] for c in classes])
    return staged, classes
