"""``lulc clean MAP -o OUT`` and ``lulc vectorize MAP -o OUT.gpkg``: the post-processing of
``lulc-infer`` on a map that already exists, under the same output rules (checked and
locked before any work, staged, verified, published together with its sidecars)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import rasterio

from lulc.runtime.assess.maps import map_classes
from lulc.runtime.core.errors import InputRasterError, SettingError
from lulc.runtime.core.manifest import ClassInfo
from lulc.runtime.io.outputs import check_outputs, locked_all
from lulc.runtime.io.publish import Publication
from lulc.runtime.io.qgis import sidecar_paths, write_sidecars
from lulc.runtime.io.quicklook import write_quicklook
from lulc.runtime.io.rasters import open_raster
from lulc.runtime.io.writer import Product, finish_map
from lulc.runtime.postprocess.stage import PostOptions
from lulc.runtime.postprocess.vectorize import write_vector


def _classes(src: rasterio.io.DatasetReader) -> list[ClassInfo]:
    """The map's classes with their colours (colour table, else its CLASS_COLORS tag)."""
    names = map_classes(src).names
    try:
        table = {k: tuple(v[:3]) for k, v in src.colormap(1).items()}
    except ValueError:
        raw = src.tags(1).get("CLASS_COLORS")
        table = {int(k): tuple(v) for k, v in json.loads(raw).items()} if raw else {}
    return [ClassInfo(id=v, name=n, color=table.get(v, (128, 128, 128))) for v, n in names.items()]


def clean_map(map_path: str | os.PathLike, output: str | os.PathLike, post: PostOptions,
              vector: str | os.PathLike | None = None, simplify: float = 0.0, overwrite: bool = False,
              quicklook: str | os.PathLike | None = None) -> int:
    """Post-process ``map_path`` into ``output`` (and its polygons into ``vector``); returns
    the regions the minimum mapping unit merged away."""
    post.check()
    if not post.active:
        raise SettingError(None, "nothing to do: give --mmu, --mmu-px, --majority or --smooth")
    final = Path(output)
    wanted = {"output": final, **sidecar_paths(final), **({"vector": vector} if vector else {}),
              **({"quicklook": quicklook} if quicklook else {})}
    paths = check_outputs(wanted, [map_path], overwrite=overwrite)
    with locked_all(paths.values()):
        check_outputs(wanted, [map_path], overwrite=overwrite)
        publication = Publication(paths)
        with open_raster(map_path, "class map") as src:
            classes = _classes(src)
            names = [d or "" for d in src.descriptions]
            post.threshold(src)
        if names[0] != "class":
            raise InputRasterError(f"{map_path} is not a class map written by lulc (band 1 is {names[0]!r})")
        measure = next((n.removeprefix("uncertainty_") for n in names if n.startswith("uncertainty_")), None)
        try:
            merged = finish_map(Path(map_path), publication.staged("output"), final,
                                Product(names, tuple(c.id for c in classes), post, measure))
            write_sidecars({w: publication.staged(w) for w in sidecar_paths(final)}, classes, final, bands=names)
            if vector:
                write_vector(publication.staged("output"), publication.staged("vector"), paths["vector"], simplify)
            if quicklook:
                write_quicklook(publication.staged("output"), publication.staged("quicklook"), final=paths["quicklook"])
            publication.commit()
        except BaseException:
            publication.discard()
            raise
    return merged


def vectorize_map(map_path: str | os.PathLike, output: str | os.PathLike, simplify: float = 0.0,
                  overwrite: bool = False) -> int:
    """The regions of ``map_path`` as polygons in the GeoPackage ``output``; returns how many."""
    paths = check_outputs({"output": output}, [map_path], overwrite=overwrite)
    with locked_all(paths.values()):
        publication = Publication(paths)
        with open_raster(map_path, "class map"):
            pass  # a one-line error for a missing or corrupt map
        try:
            count = write_vector(Path(map_path), publication.staged("output"), paths["output"], simplify)
            publication.commit()
        except BaseException:
            publication.discard()
            raise
    return count
