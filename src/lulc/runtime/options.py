"""What a classifying run is asked to do, and what it reports back: below the pipeline.

:class:`InferOptions` is filled by the CLI (``lulc-infer``, ``lulc batch``), read by the block
pipeline, the single-process run (:mod:`lulc.runtime.infer`) and the distributed one
(:mod:`lulc.runtime.distributed`), which all import it from here and none from each other.
:func:`tile_geometry` turns options and a raster into the tiling every one of them uses, and
:class:`RunFigures` is the typed result of classifying (here or on a cluster).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from lulc.runtime.backends.scene_stride import stride_model, stride_tiles
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import SettingError
from lulc.runtime.io.mapformat import band_layout
from lulc.runtime.io.writer import Product
from lulc.runtime.postprocess.stage import PostOptions

#: MB of GDAL block cache while a raster is streamed (its default, 5 % of RAM, grows with it)
GDAL_CACHE_MB = 64

Backend = Literal["auto", "trt", "onnx", "keras"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "int8"]
BandNames = Literal["strict", "auto", "ignore"]
Measure = Literal["entropy", "margin", "least"]


@dataclass
class InferOptions:
    """Every setting of one run; the defaults are ``lulc-infer``'s."""

    backend: Backend = "auto"
    tile: int | None = None  # px (default: the bundle's)
    overlap: int | None = None  # px (default: the bundle's)
    batch_size: int | None = None  # tiles per model call (None: about 0.25 MPix)
    probabilities: bool = False
    confidence: bool = False
    overwrite: bool = False
    resume: bool = False
    block_px: int = 1024
    progress: bool = True
    quicklook: str | os.PathLike | None = None  # PNG preview written after the map
    device: Device = "auto"  # passed to the backend
    precision: Precision = "auto"  # which of the bundle's gated artefacts runs
    band_names: BandNames = "strict"  # how input band names must match the model's
    dask: str | None = None  # local, local:N or a scheduler address: classify on a Dask cluster
    cores: int | None = None  # CPU threads for the model (default: all this process may use)
    scene_stride: int | None = None  # scene bundles: one class per N px cell (default: per patch)
    uncertainty: Measure | None = None  # add an uncertainty band
    ensemble: tuple[str, ...] = ()  # more bundles whose probabilities are averaged with the first's
    tta: Literal["flips", "d4"] | None = None  # average the model over flipped/rotated tiles
    mmu: float | None = None  # minimum mapping unit, hectares
    mmu_px: int | None = None  # the same in pixels
    majority: int | None = None  # majority filter radius, px
    smooth: Literal["bayes"] | None = None  # Bayesian smoothing of the probabilities
    smoothness: float = 20.0
    smooth_window: int = 7
    vector: str | os.PathLike | None = None  # GeoPackage of the map's regions as polygons
    simplify: float = 0.0  # tolerance of --vector, map units

    @property
    def post(self) -> PostOptions:
        """The post-processing these options ask for."""
        return PostOptions(self.mmu, self.mmu_px, self.majority, self.smooth, self.smoothness, self.smooth_window)

    def product(self, bundle: Bundle) -> Product:
        """The bands and post-processing of the map a run of ``bundle`` publishes."""
        classes = bundle.manifest.map_classes
        return Product(band_layout(classes, self.probabilities, self.confidence, self.uncertainty),
                       tuple(c.id for c in classes), self.post, self.uncertainty)

    @property
    def keeps_probabilities(self) -> bool:
        """Whether the partial map holds probability bands: asked for, or read back by ``--smooth``."""
        return self.probabilities or bool(self.smooth)


@dataclass
class RunFigures:
    """What classifying a raster did, here or on a cluster."""

    backend: str
    device: str
    precision: str
    tiles_run: int
    tiles_skipped: int
    resumed: bool  # finished rows or parts of an interrupted run were kept
    workers: int | None = None  # Dask workers
    parts: int | None = None  # Dask parts


def tile_geometry(bundle: Bundle, opts: InferOptions, height: int, width: int) -> tuple[int, int]:
    """(tile, overlap) for this raster: the bundle's (or its stride model's) unless overridden,
    and never larger than the raster needs (one tile then covers it, so no overlap), which
    bounds the buffers."""
    m = bundle.manifest
    size = opts.tile or m.tile.size
    overlap = m.tile.overlap if opts.overlap is None else opts.overlap
    if size < 1:
        raise SettingError("--tile", f"must be a positive number of px, got {size}")
    stride = stride_model(m, opts.scene_stride, bundle.root)
    if stride and opts.overlap is None:
        size, overlap = stride_tiles(stride, size, overlap, m.tile.divisor, opts.tile is not None)
    if size % m.tile.divisor:
        raise SettingError("--tile", f"{size} must be a multiple of {m.tile.divisor} for this {m.architecture}")
    if not 0 <= overlap < size:
        raise SettingError("--overlap", f"{overlap} must be between 0 and the tile size {size}")
    cell = stride.stride if stride else m.tile.divisor if m.task == "scene" else 1
    if overlap % cell:
        raise SettingError("--overlap", f"{overlap} must be a multiple of this scene model's {cell} px class cells "
                                        "(tiles then share the raster's cell grid)")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise SettingError("--batch-size", f"must be at least 1, got {opts.batch_size}")
    whole = -(-max(height, width) // m.tile.divisor) * m.tile.divisor
    if size >= whole:
        return whole, 0
    return size, overlap
