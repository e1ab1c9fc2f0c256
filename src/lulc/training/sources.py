"""Training inputs: one or more rasters read as one band stack, window by window.

Several rasters (e.g. 10 m and 20 m band files, or an image plus a DEM) are stacked in the
order given. They must share one grid; ``align=True`` instead warps every raster onto the
grid of the first one (WarpedVRT, read lazily) so that nothing is resampled silently.
Derived indices are appended here with the runtime's own function, and nodata is masked
per raster before they are computed.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from lulc.runtime.core.errors import LulcError
from lulc.runtime.indices import append_indices, index_bands
from lulc.runtime.io.bandstack import same_grid, stack_band_names
from lulc.runtime.io.rasters import open_raster


def valid_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """(C, H, W) -> (H, W): False where any band is nodata or NaN (as the runtime masks)."""
    invalid = np.isnan(raw).any(axis=0)
    if nodata is not None:
        invalid |= (raw == nodata).any(axis=0)
    return ~invalid


class RasterStack:
    """Co-registered rasters read as one (C, H, W) float32 stack plus a validity mask."""

    def __init__(self, paths: list[str], align: bool = False, derived: list[str] | None = None):
        if not paths:
            raise LulcError("no input raster given (--image)")
        self._stack = ExitStack()
        self.sources = [self._stack.enter_context(open_raster(p, "image")) for p in paths]
        ref = self.sources[0]
        for path, src in zip(paths[1:], self.sources[1:]):
            if same_grid(ref, src):
                continue
            if not align:
                self.close()
                raise LulcError(f"{path} is not on the grid of {paths[0]} (size, CRS or transform differ); "
                                "pass --align to warp it onto the first raster's grid")
            self.sources[self.sources.index(src)] = self._stack.enter_context(
                WarpedVRT(src, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                          resampling=rasterio.enums.Resampling.bilinear))
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.name = Path(paths[0]).name
        self.bands = stack_band_names(self.sources)
        if len({b.lower() for b in self.bands}) != len(self.bands):
            self.close()
            raise LulcError(f"band names repeat across the input rasters ({', '.join(self.bands)}); rename them")
        self.derived = list(derived or [])
        index_bands(self.bands, self.derived)  # fail before any work if a needed band is absent
        self.width, self.height = ref.width, ref.height
        self.crs, self.transform, self.bounds = ref.crs, ref.transform, ref.bounds
        self.dtype = np.result_type(*[src.dtypes[0] for src in self.sources]).name
        self.nodata = ref.nodata
        # each file's own nodata (they may differ, e.g. -99999 and -32768): recorded in the bundle
        self.nodatas = [src.nodata for src in self.sources]
        self.band_counts = [src.count for src in self.sources]

    @property
    def channels(self) -> list[str]:
        return [*self.bands, *self.derived]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw channels (C, h, w) float32 and valid (h, w): False where any raster is nodata."""
        parts, valid = [], None
        for src in self.sources:
            try:
                raw = src.read(window=window, out_dtype=np.float32, boundless=False)
            except RasterioError as exc:
                raise LulcError(f"failed to read {src.name} at {window}: {exc}") from None
            v = valid_mask(raw, src.nodata)
            valid = v if valid is None else valid & v
            parts.append(raw)
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return append_indices(raw, self.bands, self.derived), valid

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RasterStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
