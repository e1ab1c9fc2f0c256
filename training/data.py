"""Training tiles cut from an image and a label raster, with a spatially blocked split.

The raster is cut into square split blocks; whole blocks go to train, validation or test
and tiles never cross a block edge, so overlapping tiles cannot leak between splits (a
random per-tile split would put near-copies of test pixels in the training set).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import rasterio

from lulc.runtime.errors import LulcError
from lulc.runtime.kernels import mask_nodata
from lulc.runtime.manifest import Normalization

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class TileSet:
    x: np.ndarray  # (N, T, T, C) float32, raw band values
    y: np.ndarray  # (N, T, T) uint8 class ids, ignore value where unlabeled or nodata
    valid: np.ndarray  # (N, T, T) bool, False where any band is nodata
    split: np.ndarray  # (N,) index into SPLITS
    split_record: dict = field(default_factory=dict)

    def part(self, name: str) -> "TileSet":
        keep = self.split == SPLITS.index(name)
        return TileSet(self.x[keep], self.y[keep], self.valid[keep], self.split[keep], self.split_record)

    def __len__(self) -> int:
        return len(self.x)


def assign_blocks(n_blocks: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split index per block: a seeded shuffle cut at the train/val/test fractions."""
    order = np.random.default_rng(seed).permutation(n_blocks)
    n_val = max(1, round(fractions[1] * n_blocks))
    n_test = max(1, round(fractions[2] * n_blocks))
    if n_blocks - n_val - n_test < 1:
        raise LulcError(f"only {n_blocks} split blocks: too few for train/val/test; use a smaller --split-block or a larger image")
    split = np.zeros(n_blocks, dtype=np.int64)
    split[order[:n_val]] = 1
    split[order[n_val : n_val + n_test]] = 2
    return split


def extract_tiles(
    image: str | os.PathLike,
    labels: str | os.PathLike,
    tile: int,
    stride: int,
    split_block: int,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    ignore: int = 255,
    min_labeled: float = 0.05,
) -> TileSet:
    """Cut labelled tiles inside spatial blocks; blocks are read one at a time."""
    if split_block < tile:
        raise LulcError(f"--split-block {split_block} must be at least the tile size {tile}")
    with rasterio.open(image) as img, rasterio.open(labels) as lab:
        if (img.width, img.height, img.transform) != (lab.width, lab.height, lab.transform):
            raise LulcError(f"{labels} is not on the grid of {image}; rasterize the labels onto the image grid")
        rows, cols = img.height // split_block, img.width // split_block
        if rows * cols == 0:
            raise LulcError(f"image {img.width} x {img.height} px is smaller than one split block ({split_block} px)")
        block_split = assign_blocks(rows * cols, fractions, seed)
        nodata = img.nodata
        xs, ys, vs, ss = [], [], [], []
        offsets = range(0, split_block - tile + 1, stride)
        for b in range(rows * cols):
            by, bx = (b // cols) * split_block, (b % cols) * split_block
            window = rasterio.windows.Window(bx, by, split_block, split_block)
            raw = img.read(window=window, out_dtype=np.float32)
            lbl = lab.read(1, window=window)
            valid = mask_nodata(raw, np.nan if nodata is None else float(nodata), nodata is not None)
            lbl = np.where(valid, lbl, ignore).astype(np.uint8)
            for oy in offsets:
                for ox in offsets:
                    t_lbl = lbl[oy : oy + tile, ox : ox + tile]
                    if (t_lbl != ignore).mean() < min_labeled:
                        continue
                    xs.append(raw[:, oy : oy + tile, ox : ox + tile].transpose(1, 2, 0))
                    ys.append(t_lbl)
                    vs.append(valid[oy : oy + tile, ox : ox + tile])
                    ss.append(block_split[b])
    if not xs:
        raise LulcError(f"no tile of {tile} px has at least {min_labeled:.0%} labelled pixels; check the labels overlap the image")
    split = np.array(ss)
    for i, name in enumerate(SPLITS):
        if not (split == i).any():
            raise LulcError(f"the {name} split got no labelled tile; use a smaller --split-block or more labels")
    record = {
        "method": "spatial-blocks", "block_px": split_block, "seed": seed, "fractions": list(fractions),
        "blocks": {name: np.flatnonzero(block_split == i).tolist() for i, name in enumerate(SPLITS)},
        "block_grid": [rows, cols], "tiles": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)},
    }
    return TileSet(np.stack(xs), np.stack(ys), np.stack(vs), split, record)


def channel_stats(x: np.ndarray, valid: np.ndarray) -> Normalization:
    """Per-channel mean, std and 1st/99th percentiles over valid pixels of the given tiles."""
    pixels = x[valid]  # (P, C)
    if len(pixels) == 0:
        raise LulcError("the training split has no valid pixel (all nodata)")
    mean = pixels.mean(axis=0, dtype=np.float64)
    std = pixels.std(axis=0, dtype=np.float64)
    p1, p99 = np.percentile(pixels, [1, 99], axis=0)
    return Normalization(mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist(), p1=p1.tolist(), p99=p99.tolist())


def normalize(x: np.ndarray, valid: np.ndarray, norm: Normalization) -> np.ndarray:
    """Z-score as the runtime's pack kernel does: invalid pixels become 0."""
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    out = (x - mean) / std
    out[~valid] = 0.0
    return out.astype(np.float32)
