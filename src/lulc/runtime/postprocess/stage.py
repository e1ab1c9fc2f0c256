"""The post-processing pass: a finished class map (the run's partial map, a distributed run's
parts, or an existing map for ``lulc clean``) to the product, strip by strip.

In this order: Bayesian smoothing of the probabilities (which may change classes, and then
the probability, confidence and uncertainty bands follow), the majority filter, then the
minimum mapping unit, the map's final rule. Each strip is read with the halo of rows its
filters need, so the result equals the filters applied to the whole map at once; the sieve
makes its own streamed passes (:mod:`lulc.runtime.postprocess.sieve`). Memory holds a strip,
never the map.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from lulc.runtime.core.errors import SettingError
from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE
from lulc.runtime.kernels import cpu as kernels
from lulc.runtime.postprocess.filters import bayes, majority
from lulc.runtime.postprocess.sieve import sieve

#: rows per strip (each band one uint8 strip in memory; Bayesian smoothing takes fewer)
STRIP_ROWS, SMOOTH_ROWS = 512, 64


@dataclass(frozen=True)
class PostOptions:
    """What to do to the map after classifying it (none by default)."""

    mmu: float | None = None  # hectares
    mmu_px: int | None = None
    majority: int | None = None  # window radius, px
    smooth: str | None = None  # "bayes"
    smoothness: float = 20.0
    smooth_window: int = 7

    @property
    def active(self) -> bool:
        return bool(self.mmu or self.mmu_px or self.majority or self.smooth)

    def check(self) -> None:
        """One line (a usage error) for a setting no run can use."""
        if self.mmu is not None and self.mmu_px is not None:
            raise SettingError(None, "--mmu and --mmu-px give the same unit two ways: use one")
        for flag, value in (("--mmu", self.mmu), ("--mmu-px", self.mmu_px), ("--majority", self.majority),
                            ("--smoothness", self.smoothness)):
            if value is not None and value <= 0:
                raise SettingError(flag, f"must be above 0, got {value}")
        if self.smooth not in (None, "bayes"):
            raise SettingError("--smooth", f"must be bayes, not {self.smooth}")
        if self.smooth_window < 3 or self.smooth_window % 2 == 0:
            raise SettingError("--smooth-window", f"must be an odd number of px, 3 or more, got {self.smooth_window}")

    def threshold(self, src: rasterio.io.DatasetReader) -> int | None:
        """The unit in pixels: ``--mmu-px``, or ``--mmu`` hectares over the map's pixel area
        (a region smaller than the unit has fewer pixels than this)."""
        if self.mmu_px:
            return self.mmu_px
        if not self.mmu:
            return None
        if src.crs is None or not src.crs.is_projected:
            raise SettingError("--mmu", "needs a map in a projected CRS (hectares need metres); use --mmu-px")
        pixel_ha = abs(src.transform.a * src.transform.e) * src.crs.linear_units_factor[1] ** 2 / 1e4
        return max(1, math.ceil(self.mmu / pixel_ha - 1e-9))


def _copy_layout(src: rasterio.io.DatasetReader, dst: rasterio.io.DatasetWriter, names: list[str]) -> None:
    """Descriptions, dataset and band tags (by band name) and band 1's colours of ``src``."""
    by_name = {d: i for i, d in enumerate(src.descriptions, start=1) if d}
    dst.update_tags(**src.tags())
    for i, name in enumerate(names, start=1):
        dst.set_band_description(i, name)
        if name in by_name:
            dst.update_tags(i, **src.tags(by_name[name]))
        elif i > 1:
            dst.update_tags(i, SCALE=f"1/{PROB_SCALE}", NODATA=str(NODATA_CLASS))
    try:
        dst.write_colormap(1, src.colormap(1))
    except ValueError:  # no colour table (a multi-band map keeps them in its CLASS_COLORS tag)
        pass


def postprocess(source: str | os.PathLike, out: Path, names: list[str], class_values: list[int], post: PostOptions,
                measure: str | None = None) -> int:
    """Write ``out`` (bands ``names``, uncompressed, tiled) from the class map ``source``
    post-processed; ``class_values`` are the map values of its probability bands, in order.
    Returns the regions the minimum mapping unit merged away."""
    with rasterio.open(source) as src:
        have = [d or "" for d in src.descriptions]
        probs = [i for i, d in enumerate(have, start=1) if d.startswith("prob_")]
        if post.smooth and len(probs) != len(class_values):
            raise SettingError("--smooth", "needs the map's probability bands (run lulc-infer with --probabilities)")
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": len(names), "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": NODATA_CLASS, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "interleave": "band", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(out, "w", **profile) as dst:
            _copy_layout(src, dst, names)
            if post.smooth or post.majority:
                for r0, bands in _filtered(src, have, probs, class_values, post, names, measure):
                    dst.write(np.stack([bands[n] for n in names]), window=Window(0, r0, src.width, bands["class"].shape[0]))
            else:
                for r0, data in _strips(src, STRIP_ROWS, 0):
                    dst.write(np.stack([data[have.index(n)] for n in names]), window=Window(0, r0, src.width, data.shape[1]))
        threshold = post.threshold(src)
    if not threshold:
        return 0
    with rasterio.open(out, "r+") as dst:
        def strips() -> Iterator[tuple[int, np.ndarray]]:
            for r0 in range(0, dst.height, STRIP_ROWS):
                yield r0, dst.read(1, window=Window(0, r0, dst.width, min(STRIP_ROWS, dst.height - r0)))

        def write(r0: int, rows: np.ndarray) -> None:
            dst.write(rows, 1, window=Window(0, r0, dst.width, rows.shape[0]))

        return sieve(strips, dst.width, threshold, write)


def _strips(src: rasterio.io.DatasetReader, rows: int, halo: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, every band of rows r0 - halo .. r0 + rows + halo, clipped to the map)."""
    for r0 in range(0, src.height, rows):
        a0, a1 = max(0, r0 - halo), min(src.height, r0 + rows + halo)
        yield r0, src.read(window=Window(0, a0, src.width, a1 - a0))


def _filtered(src: rasterio.io.DatasetReader, have: list[str], probs: list[int], class_values: list[int],
              post: PostOptions, names: list[str], measure: str | None) -> Iterator[tuple[int, dict]]:
    """Strips of the output bands by name, smoothed and majority-filtered."""
    smooth_r = post.smooth_window // 2 if post.smooth else 0
    major_r = post.majority or 0
    step = SMOOTH_ROWS if post.smooth else STRIP_ROWS
    lut = np.array([*class_values, NODATA_CLASS], np.uint8)
    for r0, data in _strips(src, step, smooth_r + major_r):
        a0 = max(0, r0 - smooth_r - major_r)
        r1 = min(src.height, r0 + step)
        c0, c1 = max(0, r0 - major_r), min(src.height, r1 + major_r)  # the rows whose class the majority needs
        bands = {n: data[i][r0 - a0 : r1 - a0] for i, n in enumerate(have)}
        classes = data[0][c0 - a0 : c1 - a0]
        if post.smooth:
            valid = data[0] != NODATA_CLASS
            sm = bayes(data[[i - 1 for i in probs]] / PROB_SCALE, valid, smooth_r, post.smoothness, c0 - a0, c1 - c0)
            here = valid[c0 - a0 : c1 - a0]
            classes = np.where(here, lut[np.argmax(sm, axis=0)], NODATA_CLASS).astype(np.uint8)
            part = sm[:, r0 - c0 : r1 - c0]
            ok = here[r0 - c0 : r1 - c0]
            scaled = np.where(ok, np.floor(part * PROB_SCALE + 0.5), 255).astype(np.uint8)
            bands.update({have[i - 1]: band for i, band in zip(probs, scaled)})
            bands["confidence"] = np.where(ok, np.floor(part.max(axis=0) * PROB_SCALE + 0.5), 255).astype(np.uint8)
            if measure:
                acc = np.concatenate([part, ok[None].astype(np.float64)]).astype(np.float32)
                unsure = np.empty(ok.shape, np.uint8)
                kernels.uncertainty(acc, ok, unsure, kernels.MEASURES[measure], kernels.entropy_table(len(probs)))
                bands[f"uncertainty_{measure}"] = unsure
        if post.majority:
            out = np.empty((r1 - r0, src.width), np.uint8)
            majority(np.ascontiguousarray(classes), major_r, r0 - c0, out)
            bands["class"] = out
        else:
            bands["class"] = classes[r0 - c0 : r1 - c0]
        yield r0, {n: bands[n] for n in names}
