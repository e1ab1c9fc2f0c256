"""Time-series samples: a ``lulc stack`` and its labels cut into tiles like single-date data,
normalised per band over all dates. Shared by temporal training (:mod:`.timeseries`) and
evaluation (:mod:`.evaluate`), so neither imports the other."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lulc.runtime.core.errors import LulcError, SettingError
from lulc.runtime.core.manifest import Normalization
from lulc.runtime.kernels.temporal import reference_mask_dates
from lulc.runtime.tools.timestack import StackInfo, read_stack_info
from lulc.training.config import TemporalConfig
from lulc.training.data import SampleSpec, TileSet, extract_tiles
from lulc.training.labels import IGNORE, prepare_labels
from lulc.training.sources import RasterStack, open_raster


class TemporalStack(RasterStack):
    """A ``lulc stack`` read as the runtime reads it: NaN on missing dates, valid if any date."""

    def __init__(self, path: str):
        self.info = read_stack_info(path)
        super().__init__([str(self.info.path)])

    def read(self, window):
        raw, _ = super().read(window)
        return reference_mask_dates(raw, self.nodata, len(self.info.bands))


def band_stats(x: np.ndarray, bands: int, time_steps: int) -> Normalization:
    """Per band mean/std over all observed values of all dates, repeated for each date."""
    per_band = x.reshape(-1, bands)
    per_band = per_band[~np.isnan(per_band).any(axis=1)].astype(np.float64)
    if not len(per_band):
        raise LulcError("the training split has no observed pixel on any date; check the stack's nodata and masks")
    mean, std = per_band.mean(axis=0), np.maximum(per_band.std(axis=0), 1e-6)
    p1, p99 = np.percentile(per_band, [1, 99], axis=0)
    rep = lambda v: np.tile(v, time_steps).tolist()  # noqa: E731
    return Normalization(mean=rep(mean), std=rep(std), p1=rep(p1), p99=rep(p99))


def unstable_water(x: np.ndarray, bands: list[str], water_bands: list[str], threshold: float) -> np.ndarray:
    """(N, H, W) True where the NDWI (a - b) / (a + b) crosses ``threshold`` across observed dates.

    The change-detection paper excluded such shoreline pixels: their label is right for
    some dates and wrong for others, which teaches the model noise.
    """
    missing = [b for b in water_bands if b not in bands]
    if len(water_bands) != 2 or missing:
        raise SettingError("--mask-unstable-water",
                           f"needs two of the stack's bands ({', '.join(bands)}), e.g. green,nir")
    seq = x.reshape(*x.shape[:3], -1, len(bands))
    a, b = seq[..., bands.index(water_bands[0])], seq[..., bands.index(water_bands[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (a - b) / (a + b)
    seen = ~np.isnan(ndwi)
    return ((ndwi > threshold) & seen).any(axis=-1) & ((ndwi <= threshold) & seen).any(axis=-1)


def normalize_series(x: np.ndarray, norm: Normalization) -> np.ndarray:
    """Z-score per channel; missing dates stay NaN, which the models mask (never a zero reflectance)."""
    return ((x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)).astype(np.float32)


@dataclass
class SeriesSamples:
    tiles: TileSet  # raw values, NaN on missing dates
    classes: list[dict]
    info: StackInfo  # bands, dates, channels, path
    dtype: str
    nodata: float | None
    water: dict | None  # what --mask-unstable-water dropped


def temporal_samples(cfg: TemporalConfig, work: Path, known: list[dict] | None = None) -> SeriesSamples:
    """Samples of a stack and its labels, cut like single-date ones, unstable shorelines dropped.

    ``known``: a bundle's classes, for evaluation (see :func:`lulc.training.labels.prepare_labels`).
    """
    with TemporalStack(cfg.stack) as stack:
        labels, classes = prepare_labels(cfg.labels, stack, work, cfg.label_column, cfg.classes, known=known)
        spec = SampleSpec(tile=cfg.tile, stride=cfg.stride or max(1, cfg.tile // 2),
                          split_block=cfg.split_block or 2 * cfg.tile, seed=cfg.seed, ignore=IGNORE)
        with open_raster(labels, "label raster") as lab:
            tiles, _ = extract_tiles(stack, lab, spec, statistics=False)  # see band_stats
        info, dtype, nodata = stack.info, stack.dtype, stack.nodata
    water = None
    if cfg.mask_unstable_water:
        unstable = unstable_water(tiles.x, info.bands, cfg.mask_unstable_water.split(","), cfg.water_threshold)
        water = {"bands": cfg.mask_unstable_water, "threshold": cfg.water_threshold,
                 "labels_ignored": int((unstable & (tiles.y != IGNORE)).sum())}
        tiles.y[unstable] = IGNORE
    return SeriesSamples(tiles, classes, info, dtype, nodata, water)
