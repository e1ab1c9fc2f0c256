"""The runtime's compute kernels: Numba CPU kernels (:mod:`.cpu`), their CUDA twins (:mod:`.cuda`)
and the per-date masking of time series (:mod:`.temporal`).

:func:`block_ops` is the one place where a run's kernels are chosen: the twin that matches
where the block buffers live (host or CUDA device), and the masking rule of the bundle
(a pixel is nodata when any band is, or, for a time series, when every date is missing).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from lulc.runtime.core.errors import BackendUnavailable
from lulc.runtime.core.manifest import Manifest

#: a block buffer: a NumPy array, or a CUDA device array (no static type) for the CUDA twins
Array = Any


def is_device_array(array: object) -> bool:
    """Whether ``array`` lives on a CUDA device (Numba device arrays, CuPy, the CUDA simulator's)."""
    return hasattr(array, "__cuda_array_interface__") or type(array).__module__.startswith("numba.cuda")


def for_array(array: object) -> ModuleType:
    """The kernel module for ``array``: the CUDA twins for device arrays, the CPU kernels otherwise."""
    if is_device_array(array):
        from lulc.runtime.kernels import cuda

        return cuda
    from lulc.runtime.kernels import cpu

    return cpu


class BlockOps:
    """The kernels of one run, chosen once: ``arrays`` (the cpu or cuda module: buffers,
    blending, finalising) and :meth:`mask` / :meth:`pack` bound to the input's nodata and to
    the bundle's masking rule."""

    def __init__(self, arrays: ModuleType, manifest: Manifest, nodata: float | None, layout: str = "nhwc"):
        self.arrays = arrays
        #: the model's tile layout: "nhwc", or "nchw" (channels first: no transposes in or out of
        #: the model, and packing and blending run along contiguous rows)
        self.layout = layout
        self.nodata = np.nan if nodata is None else float(nodata)
        self.use_nodata = nodata is not None
        steps = manifest.input.time_steps
        self.bands_per_date = len(manifest.input.channels) // steps if steps and steps > 1 else None
        if self.bands_per_date and arrays.__name__.endswith(".cuda"):
            raise BackendUnavailable("time-series bundles run with host (CPU) buffers; use --device cpu")
        if self.bands_per_date and layout != "nhwc":
            raise BackendUnavailable("time-series models take channels-last tiles")

    def mask(self, block: Array, valid: Array) -> None:
        """valid (H, W) from the raw block (C, H, W): False where the pixel has no usable data."""
        if self.bands_per_date:
            from lulc.runtime.kernels.temporal import mask_all_dates

            mask_all_dates(block, self.bands_per_date, self.nodata, self.use_nodata, valid)
        else:
            self.arrays.mask_nodata(block, self.nodata, self.use_nodata, valid)

    def pack(self, block: Array, valid: Array, ys: np.ndarray, xs: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
             out: Array, counts: Array) -> None:
        """Normalised model tiles (N, T, T, C; N, C, T, T channels first) and valid pixels per
        tile, from the masked block."""
        if self.bands_per_date:
            from lulc.runtime.kernels.temporal import pack_dates

            pack_dates(block, valid, ys, xs, mean, inv_std, out, counts, self.bands_per_date, self.nodata,
                       self.use_nodata)
        elif self.layout == "nchw":
            self.arrays.pack_tiles_nchw(block, valid, ys, xs, mean, inv_std, out, counts)
        else:
            self.arrays.pack_tiles(block, valid, ys, xs, mean, inv_std, out, counts)

    def blend(self, probs: Array, ys: np.ndarray, xs: np.ndarray, weight: Array, acc: Array) -> None:
        """Add a batch's weighted tile probabilities (in the model's layout) into ``acc``."""
        if self.layout == "nchw":
            self.arrays.blend_accumulate_nchw(probs, ys, xs, weight, acc)
        else:
            self.arrays.blend_accumulate(probs, ys, xs, weight, acc)

    def tile_shape(self, n: int, size: int, channels: int) -> tuple[int, int, int, int]:
        """The packed buffer's shape for ``n`` tiles."""
        return (n, channels, size, size) if self.layout == "nchw" else (n, size, size, channels)


def block_ops(on_device: bool, manifest: Manifest, nodata: float | None, layout: str = "nhwc") -> BlockOps:
    """The kernels for a run whose block buffers live on the GPU (``on_device``) or the host,
    for a model that takes ``layout`` tiles."""
    if on_device:
        from lulc.runtime.kernels import cuda

        return BlockOps(cuda, manifest, nodata, layout)
    from lulc.runtime.kernels import cpu

    return BlockOps(cpu, manifest, nodata, layout)
