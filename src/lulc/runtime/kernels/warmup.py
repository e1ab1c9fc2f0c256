"""Load (or compile) the Numba kernels once at start-up, beside opening the model.

A process's first Numba call pays Numba's own start-up, and the first run after install
compiles every kernel: done here on a thread (and, with a cold cache, half of it in a second
process), that time overlaps opening the model and reading the first block instead of
delaying the first model call.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lulc.runtime.kernels import cpu
from lulc.runtime.kernels.cpu import (
    blend_accumulate,
    blend_accumulate_nchw,
    finalize,
    mask_nodata,
    mode_2x2,
    pack_tiles,
    pack_tiles_nchw,
)


def _warm_read_side() -> None:
    """Compile (or load) the kernels that run before the first model call: the nodata mask and
    the channels-first pack (what a bundle's twin takes, the usual run)."""
    block = np.zeros((1, 2, 2), np.float32)
    valid = np.empty((2, 2), np.bool_)
    mask_nodata(block, 0.0, True, valid)
    _pack(pack_tiles_nchw, block, valid, (1, 1, 2, 2))


def _warm_write_side() -> None:
    """Compile (or load) the kernels that run after it: blend, finalize and the overview mode,
    and the channels-last pack and blend (a model without a current twin: time series, a
    replaced ``model.onnx``)."""
    origin = np.zeros(1, np.int64)
    valid = np.ones((2, 2), np.bool_)
    acc = np.zeros((2, 2, 2), np.float32)
    blend_accumulate_nchw(np.zeros((1, 1, 2, 2), np.float32), origin, origin, np.ones((2, 2), np.float32), acc)
    pixels = np.empty((2, 2), np.uint8)
    finalize(acc, valid, pixels, np.empty((1, 2, 2), np.uint8), pixels, False, False)
    _pack(pack_tiles, np.zeros((1, 2, 2), np.float32), valid, (1, 2, 2, 1))
    blend_accumulate(np.zeros((1, 2, 2, 1), np.float32), origin, origin, np.ones((2, 2), np.float32), acc)
    mode_2x2(pixels[None], np.empty((1, 1, 1), np.uint8))


def _pack(kernel: Callable[..., None], block: np.ndarray, valid: np.ndarray, shape: tuple[int, ...]) -> None:
    """One call of a pack kernel on ``block`` (1, 2, 2) into tiles of ``shape``."""
    origin = np.zeros(1, np.int64)
    scale = np.ones(1, np.float32)
    kernel(block, valid, origin, origin, scale, scale, np.empty(shape, np.float32), np.empty(1, np.int64))


def _cache_is_cold() -> bool:
    """No cached machine code for the last kernel a run compiles: the first run after install."""
    try:
        folder = Path(mode_2x2._cache.cache_path)  # type: ignore[attr-defined]
    except AttributeError:  # a Numba without the on-disk cache API: compile here as before
        return False
    return not any(folder.glob(f"{Path(cpu.__file__).stem}.mode_2x2-*.nbi"))


def warm_up() -> None:
    """Load (or compile) each kernel once, on a few pixels, with the argument types the runtime uses.

    A process's first Numba call pays Numba's own start-up (LLVM, cache loading): about half a
    second. The runtime runs this on a thread at start so that cost overlaps opening the model
    and reading the first block instead of delaying the first model call. On the first run
    after install nothing is cached and compiling all kernels takes over a second, holding the GIL:
    then a second process compiles the write-side kernels into the cache while this one
    compiles the read side, and this one loads them from the cache when that is done.
    """
    beside = None
    if _cache_is_cold():
        code = "from lulc.runtime.kernels.warmup import _warm_write_side; _warm_write_side()"
        try:
            beside = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # no interpreter to start (an embedded or frozen Python): compile all here
            beside = None
    _warm_read_side()
    if beside is not None:
        beside.wait()
    _warm_write_side()
