"""STAC Items as model inputs: the assets that carry a bundle's bands, checked against the files.

An Item names its bands by asset key or ``eo:bands`` (STAC 1.1 ``bands``) name; the assets
matching the bundle's bands, in its order, become one stack. But an Item is metadata someone
wrote about the files, and it can be wrong: an asset keyed ``B02`` that points at ``B03.tif``,
or a multi-band file declared in model order whose own descriptions run B12..B01. Where a file
names its bands, those names win: a file that disagrees with its Item is refused in one line
(as ``lulc-infer`` refuses a file that disagrees with the model), and ``--band-names`` applies
as it does there. Where a file names nothing, the Item's names are all there is to go on.
"""
from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.rasters import names_fit, open_raster

#: characters an item id may not carry into a file name: path separators, control characters
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StacStack:
    """The files of one Item that carry the bundle's bands, in its order, and the band names
    the Item declares for each file."""

    item_id: str
    hrefs: tuple[str, ...]
    declared: tuple[tuple[str, ...], ...]
    keys: tuple[str, ...]  # the asset keys, for messages


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (read through /vsicurl/), not a local path."""
    return urlsplit(text).scheme in ("http", "https")


def read_json(source: str) -> dict:
    """A STAC document from a file or an http(s) URL."""
    try:
        if is_url(source):
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 (user-given http(s) URL)
                doc = json.loads(response.read())
        else:
            doc = json.loads(Path(source).read_text())
    except (OSError, ValueError) as exc:
        raise InputRasterError(f"cannot read STAC JSON {source}: {exc}") from None
    if not isinstance(doc, dict):
        raise InputRasterError(f"{source} is not a STAC Item or ItemCollection")
    return doc


def items(doc: dict, source: str) -> list[dict]:
    """The Items of an Item or ItemCollection document."""
    found = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
    if not found or not all(isinstance(i, dict) and i.get("type") == "Feature" for i in found):
        raise InputRasterError(f"{source} is not a STAC Item or ItemCollection")
    return found


def href_path(item_source: str, href: str) -> str:
    """An asset's href as GDAL opens it: relative to the item, ``file://`` as a local path,
    http(s) through /vsicurl/."""
    if urlsplit(href).scheme == "file":
        return urllib.request.url2pathname(unquote(urlsplit(href).path))
    if is_url(href) or is_url(item_source):
        url = urljoin(item_source, href)
        return f"/vsicurl/{url}" if is_url(url) else url
    return href if os.path.isabs(href) else str(Path(item_source).resolve().parent / href)


def asset_bands(asset: dict) -> list[str]:
    """Band names an asset declares (STAC 1.0 ``eo:bands`` or 1.1 ``bands``)."""
    declared = asset.get("eo:bands") or asset.get("bands") or []
    return [str(b.get("name") or b.get("common_name") or "").lower() for b in declared if isinstance(b, dict)]


def item_id(item: dict, source: str) -> str:
    """The item's id, refused where it could not be a file name (a map is named after it)."""
    raw = item.get("id")
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or _UNSAFE_ID.search(name) or name.startswith("."):
        raise InputRasterError(f"STAC item in {source} has no usable id (got {raw!r}): ids name the maps, so they may "
                               "not be empty, start with '.', or hold '/', '\\' or control characters")
    return name


def item_stack(item: dict, source: str, bands: list[str]) -> StacStack:
    """The stack of ``item``'s assets in the bundle's band order (one asset holding all the
    bands in order is used as it is); a missing band is a one-line error naming it."""
    name = item_id(item, source)
    assets = {k: a for k, a in (item.get("assets") or {}).items() if isinstance(a, dict) and a.get("href")}
    wanted = [b.lower() for b in bands]
    for key, asset in assets.items():
        if asset_bands(asset) == wanted:
            return StacStack(name, (href_path(source, asset["href"]),), (tuple(bands),), (key,))
    hrefs, keys = [], []
    for band in wanted:
        match = [(k, a) for k, a in assets.items() if k.lower() == band or asset_bands(a) == [band]]
        if not match:
            raise InputRasterError(f"STAC item {name} has no asset for band {band} "
                                   f"(assets: {', '.join(assets) or 'none'}); the model needs {', '.join(bands)}")
        keys.append(match[0][0])
        hrefs.append(href_path(source, match[0][1]["href"]))
    return StacStack(name, tuple(hrefs), tuple((b,) for b in bands), tuple(keys))


def check_files(stack: StacStack, band_names: str) -> list[str]:
    """Refuse files whose own band names disagree with what the Item declares for them (under
    ``--band-names`` ``strict`` or ``auto``; ``ignore`` trusts the Item); returns each band's
    name for the stack: the file's own where it has one, else the Item's."""
    names: list[str] = []
    for href, declared, key in zip(stack.hrefs, stack.declared, stack.keys):
        with open_raster(href, f"STAC item {stack.item_id} asset {key}") as src:
            own = [d or "" for d in src.descriptions]
        if len(own) != len(declared):
            raise InputRasterError(f"STAC item {stack.item_id}: asset {key} ({Path(href).name}) has {len(own)} bands "
                                   f"but the item declares {len(declared)} ({', '.join(declared)})")
        if band_names != "ignore" and not names_fit(own, list(declared), band_names == "auto"):
            raise InputRasterError(
                f"STAC item {stack.item_id}: asset {key} ({Path(href).name}) names its bands {', '.join(own)} but the "
                f"item declares {', '.join(declared)}; the file's own names win: fix the item, or pass "
                "--band-names ignore if the item is right")
        names += [o or d for o, d in zip(own, declared)]
    return names
