"""PNG quicklook of a class map, coloured with the map's own colour table, with a legend.

The PNG travels on its own (e-mail, reports), so it carries the class names and colours
present in the map; it is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling

from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.io.space import write_error

SWATCH = 12  # px side of a legend colour box
LINE = 16  # px per legend line


def class_lut(src: rasterio.io.DatasetReader) -> np.ndarray:
    """256 x RGBA lookup table from the colour table, or the CLASS_COLORS tag of multi-band maps."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    if src.count == 1:
        for value, rgba in src.colormap(1).items():
            lut[value] = rgba
    else:
        for value, rgb in json.loads(src.tags(1)["CLASS_COLORS"]).items():
            lut[int(value)] = (*rgb, 255)
    return lut


def class_names(src: rasterio.io.DatasetReader) -> dict[int, str]:
    """Class value -> name from the map's band-1 ``CLASS_NAMES`` tag (empty where absent)."""
    raw = src.tags(1).get("CLASS_NAMES")
    return {int(k): v for k, v in json.loads(raw).items()} if raw else {}


def legend(image: Image.Image, entries: list[tuple[str, tuple[int, ...]]]) -> Image.Image:
    """``image`` with a white legend column on its right: one colour box and name per class."""
    font = ImageFont.load_default()
    width = SWATCH + 8 + max((int(font.getlength(name)) for name, _ in entries), default=0) + 8
    height = max(image.height, LINE * len(entries) + 8)
    out = Image.new("RGBA", (image.width + width, height), (255, 255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, (name, rgba) in enumerate(entries):
        x, y = image.width + 4, 4 + i * LINE
        draw.rectangle((x, y, x + SWATCH, y + SWATCH), fill=tuple(rgba[:3]) + (255,), outline=(0, 0, 0, 255))
        draw.text((x + SWATCH + 6, y), name, fill=(0, 0, 0, 255), font=font)
    return out


def write_quicklook(class_map: str | os.PathLike, png: str | os.PathLike, max_side: int = 2048,
                    final: str | os.PathLike | None = None, need: int | None = None) -> None:
    """Write a downsampled RGBA preview (nodata transparent), read from the COG's overviews,
    with a legend of the classes present, and read it back (a failure names ``final``, the
    PNG's published name, and leaves nothing)."""
    png = Path(png)
    with rasterio.open(class_map) as src:
        scale = max(src.width, src.height) / max_side
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale))) if scale > 1 else (src.height, src.width)
        classes = src.read(1, out_shape=shape, resampling=Resampling.mode)
        lut, names = class_lut(src), class_names(src)
    lut[NODATA_CLASS] = (0, 0, 0, 0)
    present = [int(v) for v in np.unique(classes) if v != NODATA_CLASS]
    image = legend(Image.fromarray(lut[classes], mode="RGBA"), [(names.get(v, str(v)), tuple(lut[v])) for v in present])
    try:
        image.save(png, format="PNG")
        with Image.open(png) as written:
            written.load()
    except OSError as exc:
        png.unlink(missing_ok=True)
        raise write_error(Path(final or png), exc, need) from exc
