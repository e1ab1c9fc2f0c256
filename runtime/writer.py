"""Class-map output: written under a temporary name, turned into a COG, renamed when complete.

A crash, a bad block or Ctrl-C leaves nothing at the final path (the temporary files are
removed), so a half-written map can never be mistaken for a result.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from lulc.runtime.errors import LulcError, OutputError
from lulc.runtime.kernels import NODATA_CLASS, PROB_SCALE
from lulc.runtime.manifest import ClassInfo
from lulc.runtime.overviews import level_paths, with_overviews, write_levels


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (before any work) if the output cannot be created."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists (use --overwrite to replace it)")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder, not a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    return path


def band_layout(classes: list[ClassInfo], probabilities: bool, confidence: bool) -> list[str]:
    """Band descriptions in output order: class, then per-class probabilities, then confidence."""
    names = ["class"]
    if probabilities:
        names += [f"prob_{c.name}" for c in classes]
    if confidence:
        names.append("confidence")
    return names


def temp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.name}.{suffix}")


@contextmanager
def class_map_writer(
    final: Path,
    profile_src: rasterio.io.DatasetReader,
    classes: list[ClassInfo],
    probabilities: bool,
    confidence: bool,
    tags: dict[str, str],
    reopen: bool = False,
    keep_partial: Callable[[], bool] = lambda: False,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Yield a writer on a temporary tiled GeoTIFF; on success convert to COG at ``final``.

    ``reopen`` continues the temporary file of an interrupted run. On failure the temporary
    file is deleted unless ``keep_partial()`` says a resume checkpoint refers to it.
    """
    work = temp_path(final, "partial.tif")
    names = band_layout(classes, probabilities, confidence)
    profile = {
        "driver": "GTiff",
        "width": profile_src.width,
        "height": profile_src.height,
        "count": len(names),
        "dtype": "uint8",
        "crs": profile_src.crs,
        "transform": profile_src.transform,
        "nodata": NODATA_CLASS,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }
    completed = False
    try:
        if reopen and work.exists():
            dst = rasterio.open(work, "r+")
        else:
            dst = rasterio.open(work, "w", **profile)
            _describe(dst, classes, names, tags)
        with dst:
            yield dst
        _to_cog(work, final, smooth=len(names) > 1)
        completed = True
    except OSError as exc:
        if isinstance(exc, LulcError):  # an input error raised mid-run is not an output problem
            raise
        raise OutputError(f"cannot write {final}: {exc}") from exc
    finally:
        if completed or not keep_partial():
            work.unlink(missing_ok=True)


def _describe(dst, classes: list[ClassInfo], names: list[str], tags: dict[str, str]) -> None:
    for i, name in enumerate(names, start=1):
        dst.set_band_description(i, name)
    dst.write_colormap(1, {c.id: (*c.color, 255) for c in classes})
    dst.colorinterp = [ColorInterp.palette] + [ColorInterp.gray] * (len(names) - 1)
    dst.update_tags(**tags)
    dst.update_tags(
        1,
        CLASS_NAMES=json.dumps({c.id: c.name for c in classes}),
        # a TIFF colour table needs a single-band file; the tag keeps colours for multi-band maps
        CLASS_COLORS=json.dumps({c.id: list(c.color) for c in classes}),
        **{f"CLASS_{c.id}": c.name for c in classes},
    )
    if len(names) > 1:
        for i in range(2, len(names) + 1):
            dst.update_tags(i, SCALE=f"1/{PROB_SCALE}", NODATA=str(NODATA_CLASS))


def _to_cog(work: Path, final: Path, smooth: bool) -> None:
    """Compress into a Cloud-Optimised GeoTIFF next to ``final``, then rename into place.

    Overviews are the mode of each 2 x 2 cell (:mod:`lulc.runtime.overviews`). Horizontal
    differencing (predictor 2) shrinks the smooth probability bands but grows a class band,
    whose neighbouring ids have no numeric relation: without it the sample scene's class map
    is 13 % smaller (108 vs 124 KB) and compresses faster.
    """
    staged = temp_path(final, "cog.tif")
    vrt = temp_path(final, "partial.vrt")
    levels = level_paths(work)
    try:
        write_levels(work, levels)
        rio_copy(
            str(with_overviews(work, levels, vrt) if levels else work),
            str(staged),
            driver="COG",
            compress="DEFLATE",
            predictor="STANDARD" if smooth else "NO",
            overviews="FORCE_USE_EXISTING",
            blocksize=512,
            BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",  # the model is done by now: compress on every core
        )
        os.replace(staged, final)
    finally:
        for path in (staged, vrt, *levels):
            path.unlink(missing_ok=True)


def write_block(dst: rasterio.io.DatasetWriter, window: Window, bands: list[np.ndarray]) -> None:
    for i, band in enumerate(bands, start=1):
        dst.write(band, i, window=window)
