"""Class lists: which label values are classes, in which order, with which names and colours.

A model's classes are numbered 0..K-1 (the manifest's rule), but label rasters use their
own codes (1..7, CORINE's 111..523). Each class therefore carries the raster ``value`` it
came from; the bundle records these values (``provenance.label_values``) so a map can be
written with the user's codes. Where the classes come from, first match wins:

1. a class file (``--classes`` or ``classes.json`` beside the labels): every entry is a
   class, in the file's order; its ``id`` (or ``value``) is the raster value, else its position;
2. the ``CLASS_NAMES`` tag lulc writes on rasterized labels: values 0..K-1;
3. the values present in the raster, named and coloured by its raster attribute table or
   category names (GDAL's ``.aux.xml``) and its colour table where it has them.

A value absent from the raster never becomes a class unless a class file lists it, so a
raster coded 1..7 gives seven classes, not a phantom ``class_0``.
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from lulc.runtime.core.errors import LulcError
from lulc.runtime.core.manifest import ClassInfo

logger = logging.getLogger(__name__)

DEFAULT_COLORS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]
#: most classes a bundle may have (ids 0..253; 255 is the ignore value)
MAX_CLASSES = 254
# GDAL raster attribute table field usages (GDALRATFieldUsage)
_MINMAX, _MIN, _NAME, _RED, _GREEN, _BLUE = 5, 3, 2, 6, 7, 8


def default_color(index: int) -> tuple[int, int, int]:
    return DEFAULT_COLORS[index % len(DEFAULT_COLORS)]


def class_list(entries: list[tuple[int, str, tuple | None]]) -> list[dict]:
    """Classes with model ids 0..K-1 from (raster value, name, colour or None) in model order."""
    if len(entries) > MAX_CLASSES:
        raise LulcError(f"{len(entries)} classes; a bundle holds at most {MAX_CLASSES}")
    values = [v for v, _, _ in entries]
    if len(set(values)) != len(values):
        raise LulcError(f"class values repeat in the class list ({', '.join(map(str, values))}); give each class its own value")
    classes = [{"id": i, "name": name, "color": tuple(int(c) for c in color[:3]) if color else default_color(i), "value": int(v)}
               for i, (v, name, color) in enumerate(entries)]
    for c in classes:  # the manifest's rules (printable names, byte colours), said before any training
        try:
            ClassInfo(id=c["id"], name=c["name"], color=c["color"])
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = first["msg"].removeprefix("Value error, ")
            if first["loc"][0] == "color":
                problem = f"colour {list(c['color'])}: each component must be 0..255"
            raise LulcError(f"class {c['name']!r} (value {c['value']}): {problem}") from None
    return classes


def read_class_file(path: Path) -> list[dict]:
    """classes.json: a list of {"name", optional "id"/"value" (raster value), optional "color"}."""
    try:
        entries = json.loads(path.read_text())
        return class_list([(int(e.get("value", e.get("id", i))), str(e["name"]), e.get("color"))
                           for i, e in enumerate(entries)])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise LulcError(f"cannot read the class list {path}: expected a JSON list of {{\"name\", \"id\", \"color\"}} "
                        f"entries ({type(exc).__name__}: {exc})") from None


def _rat(band: ET.Element) -> dict[int, tuple[str | None, tuple | None]]:
    """value -> (name, colour) from a GDAL raster attribute table."""
    table = band.find("GDALRasterAttributeTable")
    if table is None:
        return {}
    usage, names = {}, {}
    for fd in table.findall("FieldDefn"):
        index, name = int(fd.get("index", -1)), (fd.findtext("Name") or "").strip().lower()
        usage.setdefault(int(fd.findtext("Usage") or 0), index)
        names[name] = index
    value_col = usage.get(_MINMAX, usage.get(_MIN, names.get("value")))
    name_col = usage.get(_NAME, next((names[n] for n in ("class", "name", "label", "class_name") if n in names), None))
    rgb = [usage.get(u) for u in (_RED, _GREEN, _BLUE)]
    row0, size = table.get("Row0Min"), table.get("BinSize")
    out = {}
    for r, row in enumerate(table.findall("Row")):
        cells = [f.text or "" for f in row.findall("F")]
        try:
            if value_col is not None:
                value = int(float(cells[value_col]))
            elif row0 is not None and size is not None:
                value = int(float(row0) + int(row.get("index", r)) * float(size))
            else:
                value = int(row.get("index", r))
            colour = tuple(int(float(cells[c])) for c in rgb) if None not in rgb else None
        except (ValueError, IndexError):
            continue
        out[value] = (cells[name_col].strip() or None if name_col is not None and name_col < len(cells) else None, colour)
    return out


def aux_classes(raster: Path) -> dict[int, tuple[str | None, tuple | None]]:
    """value -> (name, colour) from band 1 of ``raster``'s ``.aux.xml`` (what GDAL and QGIS
    write for category names and attribute tables; rasterio cannot read them)."""
    aux = Path(f"{raster}.aux.xml")
    if not aux.is_file():
        return {}
    try:
        root = ET.parse(aux).getroot()
    except (ET.ParseError, OSError) as exc:
        logger.warning("ignoring %s: %s", aux.name, exc)
        return {}
    band = next((b for b in root.iter("PAMRasterBand") if b.get("band", "1") == "1"), None)
    if band is None:
        return {}
    found = {v: (n, None) for v, n in enumerate(c.text for c in band.iter("Category")) if n and n.strip()}
    found.update(_rat(band))
    return found


def raster_classes(src, path: Path, values: np.ndarray) -> list[dict]:
    """Classes for the ``values`` present in the open label raster ``src`` (file at ``path``)."""
    tagged = src.tags().get("CLASS_NAMES")
    if tagged:
        return class_list([(i, n, None) for i, n in enumerate(json.loads(tagged))])
    try:
        colormap = src.colormap(1)
    except ValueError:  # no colour table
        colormap = {}
    described = aux_classes(path)
    entries = []
    for v in values.tolist():
        name, colour = described.get(v, (None, None))
        entries.append((v, name or f"class_{v}", colour or colormap.get(v)))
    if described or colormap:
        logger.info("class names/colours of %s from its %s", path.name,
                    " and ".join(w for w, ok in (("attribute table/categories", described), ("colour table", colormap)) if ok))
    return class_list(entries)
