"""GDAL VRT files, written one way (ElementTree): band stacks over other rasters, and the
overview list handed to the COG driver.

A VRT costs no pixel copy: stacking several files' bands (``lulc-infer a.tif b.tif``), a
time series's dates (``lulc stack``) or a STAC item's single-band assets is a few hundred
bytes of XML that GDAL reads as one raster.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rasterio.shutil import copy as rio_copy

_VRT_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _source_file(source: ET.Element, path: Path, folder: Path) -> None:
    """The source's file name: relative to the VRT where it lies below it (the pair can move
    together, e.g. a stack renamed into place), else absolute."""
    try:
        _text(source, "SourceFilename", path.resolve().relative_to(folder.resolve()).as_posix(), relativeToVRT="1")
    except ValueError:
        _text(source, "SourceFilename", path.resolve().as_posix(), relativeToVRT="0")


def _band(root: ET.Element, index: int, dtype: str, description: str, nodata: float | None, source: Path,
          band: int, folder: Path, source_nodata: float | None) -> None:
    """One band reading ``band`` of ``source``; with ``source_nodata`` the source's pixels of
    that value are left out (a ComplexSource), so they read as the band's own ``nodata``."""
    element = ET.SubElement(root, "VRTRasterBand", dataType=_VRT_TYPES[dtype], band=str(index))
    _text(element, "Description", description)
    if nodata is not None:
        _text(element, "NoDataValue", repr(nodata))
    src = ET.SubElement(element, "SimpleSource" if source_nodata is None else "ComplexSource")
    _source_file(src, source, folder)
    _text(src, "SourceBand", str(band))
    if source_nodata is not None:
        _text(src, "NODATA", repr(source_nodata))


def write_vrt(path: Path, grid: tuple, dtype: str, nodata: float | None,
              bands: list[tuple[str, Path, int]], tags: dict[str, str],
              source_nodata: list[float | None] | None = None) -> None:
    """Write a VRT whose bands are (description, source file, source band) on one shared grid
    (crs, transform, width, height); ``source_nodata`` (one value or None per band) maps each
    source's own nodata to ``nodata``."""
    crs, transform, width, height = grid
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    _text(root, "SRS", crs.to_wkt())
    _text(root, "GeoTransform", ", ".join(repr(v) for v in transform.to_gdal()))
    meta = ET.SubElement(root, "Metadata")
    for key, value in tags.items():
        _text(meta, "MDI", value, key=key)
    for i, ((description, source, band), snd) in enumerate(zip(bands, source_nodata or [None] * len(bands)), 1):
        _band(root, i, dtype, description, nodata, Path(source), band, path.parent, snd)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="unicode")


def with_overviews(base: Path, levels: list[Path], vrt: Path) -> Path:
    """A VRT of ``base`` (bands, colours, names, tags copied by GDAL) that lists ``levels`` as
    its overviews, for the COG driver's ``OVERVIEWS=FORCE_USE_EXISTING``."""
    rio_copy(str(base), str(vrt), driver="VRT")
    tree = ET.parse(vrt)
    for band in tree.getroot().iter("VRTRasterBand"):
        for level in levels:
            overview = ET.SubElement(band, "Overview")
            _text(overview, "SourceFilename", level.name, relativeToVRT="1")
            _text(overview, "SourceBand", band.get("band", "1"))
    tree.write(vrt)
    return vrt


def stack_rows(parts: list[tuple[Path, int]], width: int, height: int, transform: object, vrt: Path) -> Path:
    """A VRT of ``height`` rows made of ``parts`` ((file, first row) each, full width, in
    order): bands, colours, names and tags are the first part's, copied by GDAL."""
    rio_copy(str(parts[0][0]), str(vrt), driver="VRT")
    tree = ET.parse(vrt)
    root = tree.getroot()
    root.set("rasterXSize", str(width))
    root.set("rasterYSize", str(height))
    geo = root.find("GeoTransform")
    if geo is not None:
        geo.text = ", ".join(repr(v) for v in transform.to_gdal())  # type: ignore[attr-defined]
    bounds = [*[top for _, top in parts[1:]], height]
    for band in root.iter("VRTRasterBand"):
        for old in [e for e in band if e.tag.endswith("Source")]:
            band.remove(old)
        for (path, top), bottom in zip(parts, bounds):
            rows = str(bottom - top)
            source = ET.SubElement(band, "SimpleSource")
            _source_file(source, path, vrt.parent)
            _text(source, "SourceBand", band.get("band", "1"))
            ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=rows)
            ET.SubElement(source, "DstRect", xOff="0", yOff=str(top), xSize=str(width), ySize=rows)
    tree.write(vrt)
    return vrt
