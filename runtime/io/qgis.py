"""Class names where GIS software looks for them, beside the class map.

A GeoTIFF has no place for category names: GDAL keeps them in the ``.aux.xml`` sidecar
(``CategoryNames`` and a raster attribute table, read by GDAL-based tools and QGIS 3.30+),
and QGIS applies a ``.qml`` style with the same base name as the layer's default style, so
the legend reads "forest", not "1", with the map's own colours. Both are outputs of the run
and obey the same rules as the map (checked before work, written atomically).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lulc.runtime.core.manifest import ClassInfo
from lulc.runtime.io.outputs import replace_atomically, temp_path


def sidecar_paths(final: Path) -> dict[str, Path]:
    """The two sidecars of ``final``, named for the output checks."""
    return {"category names file": final.with_name(final.name + ".aux.xml"), "QGIS style": final.with_suffix(".qml")}


def aux_xml(classes: list[ClassInfo]) -> ET.Element:
    """GDAL PAM for band 1: category names by pixel value (the class ids), and a RAT of value, name and colour."""
    values = [c.id for c in classes]
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
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


def write_sidecars(final: Path, classes: list[ClassInfo]) -> None:
    """Write the ``.aux.xml`` and ``.qml`` of the class map ``final`` (pixel value = class id)."""
    paths = sidecar_paths(final)
    for path, tree in ((paths["category names file"], aux_xml(classes)), (paths["QGIS style"], qml(classes))):
        staged = temp_path(path, "partial")
        try:
            ET.ElementTree(tree).write(staged, encoding="utf-8", xml_declaration=True)
            replace_atomically(staged, path)
        finally:
            staged.unlink(missing_ok=True)
