"""Class-map output: written under a temporary name, turned into a COG, renamed when complete.

A crash, a bad block or Ctrl-C leaves nothing at the final path (the temporary files are
removed), so a half-written map can never be mistaken for a result.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from lulc.runtime.core.errors import LulcError, OutputError
from lulc.runtime.core.manifest import ClassInfo
from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE, band_layout
from lulc.runtime.io.outputs import replace_atomically, temp_path
from lulc.runtime.io.overviews import level_paths, write_levels
from lulc.runtime.io.resume import crc_bands
from lulc.runtime.io.vrt import with_overviews

if TYPE_CHECKING:
    from lulc.runtime.core.bundle import Bundle

T = TypeVar("T")


class PartialMap:
    """The uncompressed tiled GeoTIFF a run fills block by block, beside the final map.

    :meth:`sync` closes and reopens it, which is the only way to make GDAL write every
    cached block and the TIFF directory; with the fsync that follows, the rows written so
    far survive a SIGKILL, which is what lets :mod:`lulc.runtime.io.resume` trust them.
    """

    def __init__(self, final: Path, profile_src: rasterio.io.DatasetReader, classes: list[ClassInfo],
                 probabilities: bool, confidence: bool, tags: dict[str, str]):
        self.final = final
        self.path = temp_path(final, "partial.tif")
        self.classes, self.tags = classes, tags
        self.names = band_layout(classes, probabilities, confidence)
        self.profile = {
            "driver": "GTiff", "width": profile_src.width, "height": profile_src.height, "count": len(self.names),
            "dtype": "uint8", "crs": profile_src.crs, "transform": profile_src.transform, "nodata": NODATA_CLASS,
            "tiled": True, "blockxsize": 512, "blockysize": 512, "interleave": "band", "BIGTIFF": "IF_SAFER",
        }
        self.dst: rasterio.io.DatasetWriter | None = None
        self.row_crc = 0  # CRC of the pixels written since the last sync

    def create(self) -> None:
        """Start an empty partial map (any previous one is replaced)."""
        self.dst = _output_call(self.final, rasterio.open, self.path, "w", **self.profile)
        _describe(self.dst, self.classes, self.names, self.tags)

    def reopen(self, windows: list[list[Window]], crcs: list[int]) -> bool:
        """Continue the partial map of an interrupted run if its finished rows (``windows``,
        one list per block row) still hold the pixels whose CRCs the resume state recorded."""
        try:
            dst = rasterio.open(self.path, "r+")
        except (RasterioError, OSError):
            return False
        try:
            same = (dst.count, dst.width, dst.height) == (len(self.names), self.profile["width"], self.profile["height"])
            if same and all(crc_bands(dst.read(window=w) for w in row) == crc for row, crc in zip(windows, crcs)):
                self.dst = dst
                return True
        except (RasterioError, OSError):
            pass
        dst.close()
        return False

    def _open(self) -> rasterio.io.DatasetWriter:
        if self.dst is None:
            raise OutputError(f"the partial map of {self.final} is not open")
        return self.dst

    def write_block(self, window: Window, bands: list[np.ndarray]) -> None:
        """Write a block's bands (blocks of a row in raster order, one writer thread)."""
        dst = self._open()
        for i, band in enumerate(bands, start=1):
            _output_call(self.final, dst.write, band, i, window=window)
        self.row_crc = crc_bands(bands, self.row_crc)

    def sync(self) -> int:
        """Put everything written so far on disk; returns the CRC of the pixels written since
        the last sync, for the resume state to verify them by."""
        _output_call(self.final, self.close)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            _output_call(self.final, os.fsync, fd)
        finally:
            os.close(fd)
        self.dst = _output_call(self.final, rasterio.open, self.path, "r+")
        crc, self.row_crc = self.row_crc, 0
        return crc

    def close(self) -> None:
        if self.dst is not None and not self.dst.closed:
            self.dst.close()

    def finish(self) -> None:
        """Close, convert into the COG at the final path (atomically) and drop the partial map."""
        _output_call(self.final, self.close)
        _output_call(self.final, write_cog, self.path, self.final, smooth=len(self.names) > 1)
        self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def identity_tags(bundle: Bundle, scene_stride: int | None = None) -> dict[str, str]:
    """The tags that say which map this is: the model, and for a scene model its class cell
    (a batch keeps a map only when they all match)."""
    m = bundle.manifest
    cell = {"LULC_CELL_PX": str(scene_stride or m.tile.divisor)} if m.task == "scene" else {}
    return {"LULC_MODEL": bundle.fingerprint(), **cell}


def map_tags(bundle: Bundle, backend: str, scene_stride: int | None = None) -> dict[str, str]:
    """Dataset tags of every class map: what made it (a distributed run writes the same)."""
    m = bundle.manifest
    return {"LULC_BUNDLE": m.architecture, "LULC_TASK": m.task, "LULC_BACKEND": backend,
            **identity_tags(bundle, scene_stride)}


class PartMap(PartialMap):
    """Raster rows [top, bottom) of a class map, as its own GeoTIFF: one distributed task's part.

    Blocks above ``top`` (the halo a part computes for seam-free blending) are not stored;
    the part is renamed to its final name only when complete, so an existing part is a
    finished one and a rerun can skip it.
    """

    def __init__(self, part: Path, profile_src: rasterio.io.DatasetReader, classes: list[ClassInfo],
                 probabilities: bool, confidence: bool, tags: dict[str, str], top: int, bottom: int):
        super().__init__(part, profile_src, classes, probabilities, confidence, tags)
        self.path = temp_path(part, f"{os.getpid()}.partial.tif")  # one per attempt: a retried task never collides
        self.top = top
        # uncompressed like the single-process partial map: the COG step reads each part twice
        # (overview levels, then the copy), and the parts live only until then
        self.profile.update(height=bottom - top, transform=profile_src.transform * Affine.translation(0, top))

    def write_block(self, window: Window, bands: list[np.ndarray]) -> None:
        if window.row_off >= self.top:
            super().write_block(Window(window.col_off, window.row_off - self.top, window.width, window.height), bands)

    def sync(self) -> int:
        return 0  # a part is all or nothing: nothing to make durable before it is complete

    def finish(self) -> None:
        _output_call(self.final, self.close)
        replace_atomically(self.path, self.final)


def _output_call(final: Path, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a GDAL write; a failure names its cause (e.g. the disk is full), not rasterio's
    "see previous exception"."""
    try:
        return call(*args, **kwargs)
    except (RasterioError, OSError) as exc:
        if isinstance(exc, LulcError):
            raise
        raise OutputError(f"cannot write {final}: {_write_failure(final.parent, exc)}") from exc


def _write_failure(folder: Path, exc: BaseException) -> str:
    """Why a write failed: GDAL reports a full disk as a failed block write, so look."""
    try:
        fs = os.statvfs(folder)
        if fs.f_bavail * fs.f_frsize < 2**20:
            return f"no space left on the device of {folder}"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    return str(exc.__context__ or exc)


def _describe(dst: rasterio.io.DatasetWriter, classes: list[ClassInfo], names: list[str], tags: dict[str, str]) -> None:
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


def write_cog(work: Path, final: Path, smooth: bool) -> None:
    """Compress into a Cloud-Optimised GeoTIFF next to ``final``, then rename into place.

    Overviews are the mode of each 2 x 2 cell (:mod:`lulc.runtime.io.overviews`). Horizontal
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
        replace_atomically(staged, final)
    finally:
        for path in (staged, vrt, *levels):
            path.unlink(missing_ok=True)


