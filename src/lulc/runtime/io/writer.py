"""Class-map output: written under a temporary name, turned into a COG, verified, then published.

A crash, a bad block, a full disk or Ctrl-C leaves nothing at the final path, so a
half-written map can never be mistaken for a result: every GDAL write is watched for errors
GDAL reports without raising (:mod:`lulc.runtime.io.gdal_errors`), and the COG is read back
block by block, overviews included, before :mod:`lulc.runtime.io.publish` renames it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from lulc.runtime.backends import session_identity
from lulc.runtime.core.errors import LulcError, OutputError
from lulc.runtime.core.manifest import ClassInfo
from lulc.runtime.io.gdal_errors import captured
from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE, band_layout
from lulc.runtime.io.outputs import replace_atomically, temp_path
from lulc.runtime.io.overviews import level_paths, overview_sizes, write_levels
from lulc.runtime.io.resume import crc_bands
from lulc.runtime.io.space import require_space, write_error
from lulc.runtime.io.vrt import with_overviews
from lulc.runtime.postprocess.stage import PostOptions, postprocess

if TYPE_CHECKING:
    from lulc.runtime.backends import Session
    from lulc.runtime.core.bundle import Bundle

T = TypeVar("T")


class PartialMap:
    """The uncompressed tiled GeoTIFF a run fills block by block, beside the final map.

    :meth:`sync` closes and reopens it, which is the only way to make GDAL write every
    cached block and the TIFF directory; with the fsync that follows, the rows written so
    far survive a SIGKILL, which is what lets :mod:`lulc.runtime.io.resume` trust them.
    """

    def __init__(self, final: Path, profile_src: rasterio.io.DatasetReader, classes: list[ClassInfo],
                 probabilities: bool, confidence: bool, tags: dict[str, str], uncertainty: str | None = None):
        self.final = final
        self.path = temp_path(final, "partial.tif")
        self.classes, self.tags = classes, tags
        self.names = band_layout(classes, probabilities, confidence, uncertainty)
        self.profile = {
            "driver": "GTiff", "width": profile_src.width, "height": profile_src.height, "count": len(self.names),
            "dtype": "uint8", "crs": profile_src.crs, "transform": profile_src.transform, "nodata": NODATA_CLASS,
            "tiled": True, "blockxsize": 512, "blockysize": 512, "interleave": "band", "BIGTIFF": "IF_SAFER",
        }
        self.dst: rasterio.io.DatasetWriter | None = None
        self.row_crc = 0  # CRC of the pixels written since the last sync

    @property
    def work_bytes(self) -> int:
        """Bytes of the uncompressed partial map and its overview levels, which exist together
        while the COG is written (512 px tiles, whole tiles on disk)."""
        width, height = self.profile["width"], self.profile["height"]
        sizes = [(width, height), *overview_sizes(width, height)]
        return sum(-(-w // 512) * -(-h // 512) for w, h in sizes) * 512**2 * len(self.names)

    @property
    def need(self) -> int:
        """Bytes the map needs beside its folder at most: the work files and a COG no larger."""
        return 2 * self.work_bytes

    def create(self) -> None:
        """Start an empty partial map (any previous one is replaced), once the disk has room
        for it and its overviews: a run that cannot finish is refused before any work."""
        self.path.unlink(missing_ok=True)
        require_space(self.final, self.work_bytes)
        self.dst = _output_call(self.final, rasterio.open, self.path, "w", need=self.need, **self.profile)
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
            _output_call(self.final, dst.write, band, i, window=window, need=self.need)
        self.row_crc = crc_bands(bands, self.row_crc)

    def sync(self) -> int:
        """Put everything written so far on disk; returns the CRC of the pixels written since
        the last sync, for the resume state to verify them by."""
        _output_call(self.final, self.close, need=self.need)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            _output_call(self.final, os.fsync, fd, need=self.need)
        finally:
            os.close(fd)
        self.dst = _output_call(self.final, rasterio.open, self.path, "r+", need=self.need)
        crc, self.row_crc = self.row_crc, 0
        return crc

    def close(self) -> None:
        if self.dst is not None and not self.dst.closed:
            self.dst.close()

    def finish(self, staged: Path, product: Product | None = None) -> None:
        """Close and convert into the verified COG ``staged`` (published later, with the run's
        other outputs), post-processed as ``product`` asks; the partial map stays until then, so
        a kill before can still resume."""
        _output_call(self.final, self.close, need=self.need)
        finish_map(self.path, staged, self.final, product or Product(self.names), self.need)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def identity_tags(bundle: Bundle, scene_stride: int | None = None) -> dict[str, str]:
    """The tags that say which map this is: the model, and for a scene model its class cell
    (a batch keeps a map only when they all match)."""
    m = bundle.manifest
    cell = {"LULC_CELL_PX": str(scene_stride or m.tile.divisor)} if m.task == "scene" else {}
    return {"LULC_MODEL": bundle.fingerprint(), **cell}


def map_tags(bundle: Bundle, session: Session, scene_stride: int | None = None) -> dict[str, str]:
    """Dataset tags of every class map: what made it (a distributed run writes the same),
    down to the checksum of the artefact that ran."""
    m = bundle.manifest
    ran = session_identity(bundle, session)
    return {"LULC_BUNDLE": m.architecture, "LULC_TASK": m.task, "LULC_BACKEND": session.name,
            "LULC_PRECISION": session.precision, "LULC_ARTIFACT": _artifact_tag(ran),
            **identity_tags(bundle, scene_stride)}


def _artifact_tag(ran: dict) -> str:
    """The checksum of the artefact that ran; for an ensemble or --tta, a checksum of what
    each member ran and how."""
    if "members" in ran:
        return hashlib.sha256(json.dumps(ran, sort_keys=True).encode()).hexdigest()
    return str(ran["sha256"] or "")


class PartMap(PartialMap):
    """Raster rows [top, bottom) of a class map, as its own GeoTIFF: one distributed task's part.

    Blocks above ``top`` (the halo a part computes for seam-free blending) are not stored;
    the part is renamed to its final name only when complete, so an existing part is a
    finished one and a rerun can skip it.
    """

    def __init__(self, part: Path, profile_src: rasterio.io.DatasetReader, classes: list[ClassInfo],
                 probabilities: bool, confidence: bool, tags: dict[str, str], top: int, bottom: int,
                 uncertainty: str | None = None):
        super().__init__(part, profile_src, classes, probabilities, confidence, tags, uncertainty)
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

    def finish(self, staged: Path | None = None, product: Product | None = None) -> None:
        """Close, read the part back whole, and rename it to its final name (a part is not
        post-processed: the assembled map is)."""
        _output_call(self.final, self.close, need=self.need)
        _output_call(self.final, verify_raster, self.path, need=self.need)
        _output_call(self.final, replace_atomically, self.path, self.final, need=self.need)


@dataclass(frozen=True)
class Product:
    """What the published map holds: its bands and, where any is asked for, the
    post-processing of :mod:`lulc.runtime.postprocess` (``class_values``: the map values of the
    probability bands, in order; ``measure``: the uncertainty band's)."""

    names: list[str]
    class_values: tuple[int, ...] = ()
    post: PostOptions = PostOptions()
    measure: str | None = None


def finish_map(work: Path, staged: Path, final: Path, product: Product, need: int | None = None) -> int:
    """The verified COG ``staged`` from the classified map ``work`` (a partial map, or a VRT
    of a distributed run's parts), through a post-processed copy where one is asked for;
    returns the regions the minimum mapping unit merged away."""
    source, merged = work, 0
    post = temp_path(final, "post.tif")
    try:
        if product.post.active:
            merged = _output_call(final, postprocess, work, post, product.names, list(product.class_values),
                                  product.post, product.measure, need=need)
            source = post
        write_cog(source, staged, smooth=len(product.names) > 1, final=final, need=need)
    finally:
        post.unlink(missing_ok=True)
    return merged


def _output_call(final: Path, call: Callable[..., T], *args: Any, need: int | None = None, **kwargs: Any) -> T:
    """Run a GDAL write of ``final``'s files: an exception, or an error GDAL or libtiff only
    reported, is one line naming its cause (a full disk as such, with ``need`` bytes), not
    rasterio's "see previous exception"."""
    with captured() as errors:
        try:
            result = call(*args, **kwargs)
        except (RasterioError, OSError) as exc:
            if isinstance(exc, LulcError):
                raise
            raise write_error(final, exc, need) from exc
        failure = errors.failed()
    if failure:
        raise write_error(final, failure, need)
    return result


def verify_raster(path: Path) -> None:
    """Read every block of every band of ``path``, and of each of its overviews: a file cut
    short or left with a broken tile by a failed write raises here, before anyone sees it."""
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    for level in [{}, *({"OVERVIEW_LEVEL": n} for n in range(levels))]:
        with rasterio.open(path, **level) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)


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


def write_cog(work: Path, staged: Path, smooth: bool, final: Path | None = None, need: int | None = None) -> None:
    """Compress ``work`` into the Cloud-Optimised GeoTIFF ``staged`` and read it back whole
    (failures name ``final``, the map it becomes, and the ``need`` bytes of a full disk).

    Overviews are the mode of each 2 x 2 cell (:mod:`lulc.runtime.io.overviews`). Horizontal
    differencing (predictor 2) shrinks the smooth probability bands but grows a class band,
    whose neighbouring ids have no numeric relation: without it the sample scene's class map
    is 13 % smaller (108 vs 124 KB) and compresses faster.
    """
    final = final or staged
    vrt = temp_path(staged, "partial.vrt")
    levels = level_paths(work)
    try:
        _output_call(final, write_levels, work, levels, need=need)
        source = _output_call(final, with_overviews, work, levels, vrt, need=need) if levels else work
        _output_call(final, rio_copy, str(source), str(staged),
                     driver="COG", compress="DEFLATE", predictor="STANDARD" if smooth else "NO",
                     overviews="FORCE_USE_EXISTING", blocksize=512, BIGTIFF="IF_SAFER",
                     NUM_THREADS="ALL_CPUS",  # the model is done by now: compress on every core
                     need=need)
        _output_call(final, verify_raster, staged, need=need)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    finally:
        for path in (vrt, *levels):
            path.unlink(missing_ok=True)


