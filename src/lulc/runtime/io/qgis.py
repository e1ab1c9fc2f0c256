"""Class names where GIS software looks for them, beside the class map.

A GeoTIFF has no place for category names: GDAL keeps them in the ``.aux.xml`` sidecar
(``CategoryNames`` and a raster attribute table, read by GDAL-based tools and QGIS 3.30+),
and QGIS applies a ``.qml`` style with the same base name as the layer's default style, so
the legend reads "forest", not "1", with the map's own colours. Both are outputs of the run
and obey the same rules as the map (checked before work, staged, read back and published
with it: :mod:`lulc.runtime.io.publish`).

The ``.aux.xml`` also carries band 1's colour table: GDAL's COG driver keeps a TIFF colour
table only in single-band files, so a map with probability bands has its palette there
(GDAL falls back to this PAM table, and QGIS reads it).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lulc.runtime.core.manifest import ClassInfo
from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE
from lulc.runtime.io.space import write_error


def sidecar_paths(final: Path) -> dict[str, Path]:
    """The two sidecars of ``final``, named for the output checks."""
    return {"category names file": final.with_name(final.name + ".aux.xml"), "QGIS style": final.with_suffix(".qml")}


def aux_xml(classes: list[ClassInfo], bands: list[str] | None = None) -> ET.Element:
    """GDAL PAM for band 1: category names by pixel value (the class ids), and a RAT of value, name and colour;
    for the other ``bands`` (their descriptions, in order) their name and scale, so a GIS lists
    ``uncertainty_entropy`` rather than "Band 4"."""
    values = [c.id for c in classes]
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    colors = {c.id: c.color for c in classes}
    for value in range(max(values) + 1):
        r, g, b = colors.get(value, (0, 0, 0))
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255" if value in colors else "0")
    names = ET.SubElement(band, "CategoryNames")
    by_value = {v: c.name for v, c in zip(values, classes)}
    for value in range(max(values) + 1):
        ET.SubElement(names, "Category").text = by_value.get(value, "")
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate([("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7),
                                                  ("Blue", 0, 8)]):
        field = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(usage)
    for row, (value, c) in enumerate(zip(values, classes)):
        entry = ET.SubElement(rat, "Row", index=str(row))
        for cell in (value, c.name, *c.color):
            ET.SubElement(entry, "F").text = str(cell)
    for index, name in enumerate((bands or ["class"])[1:], start=2):
        extra = ET.SubElement(root, "PAMRasterBand", band=str(index))
        ET.SubElement(extra, "Description").text = name
        ET.SubElement(extra, "NoDataValue").text = str(NODATA_CLASS)
        ET.SubElement(extra, "Scale").text = repr(1 / PROB_SCALE)  # 0..254 stored for 0..1
    return root


def qml(classes: list[ClassInfo]) -> ET.Element:
    """A QGIS paletted-renderer style: one entry per class (value = its id), its colour and its name."""
    values = [c.id for c in classes]
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    renderer = ET.SubElement(ET.SubElement(root, "pipe"), "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")
    palette = ET.SubElement(renderer, "colorPalette")
    for value, c in zip(values, classes):
        ET.SubElement(palette, "paletteEntry", value=str(value), label=c.name, alpha="255",
                      color="#{:02x}{:02x}{:02x}".format(*c.color))
    return root


def write_sidecars(paths: dict[str, Path], classes: list[ClassInfo], final: Path, need: int | None = None,
                   bands: list[str] | None = None) -> None:
    """Write the ``.aux.xml`` and ``.qml`` of the class map ``final`` (pixel value = class id)
    to ``paths`` (keyed as :func:`sidecar_paths` names them; their staged names), each read
    back as XML: a failed write is one line about ``final``, and nothing is left."""
    # GDAL ignores a PAM file that opens with an XML declaration (its colour table and names
    # vanish: found when the multi-band maps' palette did not load), so the .aux.xml has none
    for path, tree, declared in ((paths["category names file"], aux_xml(classes, bands), False),
                                 (paths["QGIS style"], qml(classes), True)):
        try:
            ET.ElementTree(tree).write(path, encoding="utf-8", xml_declaration=declared)
            ET.parse(path)
        except (OSError, ET.ParseError) as exc:
            path.unlink(missing_ok=True)
            raise write_error(final, exc, need) from exc
