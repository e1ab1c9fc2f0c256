"""Points and polygons in and out: GeoPackage, Shapefile, GeoJSON (through fiona) and CSV.

Reference samples and sample designs are small tables of features, read whole. CSV needs no
extra package (columns x and y, and a CRS given by the caller); the other formats need fiona
(`pip install 'lulc[vector]'`, also part of `[train]`), imported only when one is used;
Shapefiles are read, not written.
Outputs are written under a hidden name beside the target and renamed when complete.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.errors import CRSError

from lulc.runtime.core.errors import InputRasterError, LulcError
from lulc.runtime.io.outputs import replace_atomically, temp_path
from lulc.runtime.io.space import write_error

#: OGR drivers by file suffix, for writing (one-file formats only: a Shapefile's .dbf/.shx/.prj
#: could not be renamed into place together)
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


@dataclass
class Features:
    """Geometries (GeoJSON-like dicts) with their attributes, in one CRS (None: unknown)."""

    crs: CRS | None
    geometries: list[dict] = field(default_factory=list)
    properties: list[dict] = field(default_factory=list)


def _fiona() -> Any:
    try:
        import fiona
    except ImportError:
        raise LulcError("reading and writing GeoPackage, Shapefile and GeoJSON needs fiona: "
                        "pip install 'lulc[vector]' (or give a CSV)") from None
    return fiona


def parse_crs(text: str, what: str = "--crs") -> CRS:
    """A CRS from user input (EPSG:32633, WKT, PROJ), or one line naming the option."""
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise InputRasterError(f"{what} {text!r} is not a CRS (use e.g. EPSG:32633)") from None


def read_features(path: str | os.PathLike, crs: CRS | None = None, x: str = "x", y: str = "y") -> Features:
    """Every feature of a vector file, or the rows of a CSV as points at (``x``, ``y``) in ``crs``."""
    path = Path(path)
    if not path.is_file():
        raise InputRasterError(f"reference {path} not found")
    if path.suffix.lower() == ".csv":
        return _read_csv(path, crs, x, y)
    fiona = _fiona()
    try:
        with fiona.open(path) as src:
            file_crs = CRS.from_wkt(src.crs_wkt) if src.crs_wkt else None
            features = Features(crs or file_crs)
            for feat in src:
                if feat.geometry is None:
                    continue
                features.geometries.append(dict(feat.geometry))
                features.properties.append(dict(feat.properties))
    except (fiona.errors.FionaError, OSError, ValueError) as exc:
        raise InputRasterError(f"cannot read reference {path}: {exc}") from None
    return features


def _read_csv(path: Path, crs: CRS | None, x: str, y: str) -> Features:
    features = Features(crs)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (x, y) if c not in (reader.fieldnames or [])]
            if missing:
                raise InputRasterError(f"{path.name} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])}); "
                                       "a CSV reference needs x and y columns (--x-field/--y-field)")
            for n, row in enumerate(reader, start=2):
                try:
                    point = (float(row[x]), float(row[y]))
                except (TypeError, ValueError):
                    raise InputRasterError(f"{path.name} line {n}: x/y {row[x]!r}, {row[y]!r} are not numbers") from None
                features.geometries.append({"type": "Point", "coordinates": point})
                features.properties.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputRasterError(f"cannot read reference {path}: {exc}") from None
    return features


def write_points(path: str | os.PathLike, crs: CRS, rows: list[dict], schema: dict[str, str]) -> None:
    """Points (rows with ``x``, ``y`` and the ``schema`` fields: name -> 'int' | 'float' | 'str')
    to a GeoPackage/Shapefile/GeoJSON by suffix, or a CSV; written under a hidden name and
    renamed when complete."""
    path = Path(path)
    staged = temp_path(path, "partial" + path.suffix)
    try:
        if path.suffix.lower() == ".csv":
            _write_csv(staged, rows, schema)
        else:
            _write_ogr(staged, path, crs, rows, schema)
        replace_atomically(staged, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        staged.unlink(missing_ok=True)


def _write_csv(staged: Path, rows: list[dict], schema: dict[str, str]) -> None:
    with open(staged, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["x", "y", *schema])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in ["x", "y", *schema]})


def _write_ogr(staged: Path, path: Path, crs: CRS, rows: list[dict], schema: dict[str, str]) -> None:
    fiona = _fiona()
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise LulcError(f"{path.name}: write points as .gpkg, .geojson or .csv")
    kinds: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": lambda v: "" if v is None else str(v)}
    try:
        dst = fiona.open(staged, "w", driver=driver, crs_wkt=crs.to_wkt(), layer=path.stem,
                         schema={"geometry": "Point", "properties": dict(schema)})
    except (fiona.errors.FionaError, OSError) as exc:
        raise write_error(path, exc) from exc
    with dst:
        dst.writerecords({"geometry": {"type": "Point", "coordinates": (row["x"], row["y"])},
                          "properties": {k: kinds[t](row.get(k)) if row.get(k) not in (None, "") or t == "str" else None
                                         for k, t in schema.items()}} for row in rows)
