"""Tile and block geometry for streaming, seam-free inference.

Tiles of ``size`` px sit on one global grid with stride ``size - overlap``; each output
pixel is the weighted mean of every tile covering it, exactly as if the whole raster had
been tiled at once. To keep memory flat, the grid is cut into *blocks* of k x k tiles
processed in raster order. A block's tiles spill ``overlap`` px past its owned area to the
right and below; those strips are carried to the neighbouring blocks (a left strip per
block, one ``overlap``-tall row buffer for the next block row), so no tile runs twice and
no pixel is finalised before all its tiles are in.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def tile_origins(length: int, size: int, stride: int) -> np.ndarray:
    """Origins along one axis so tiles cover [0, length); the last may overhang (padded)."""
    count = 1 if length <= size else math.ceil((length - size) / stride) + 1
    return np.arange(count, dtype=np.int64) * stride


def blend_weights(size: int, overlap: int, margin: int = 0) -> np.ndarray:
    """Separable raised-cosine window: 1 in the tile centre, tapering across the overlap.

    The outer ``margin`` px (where the model saw the tile's padding; ``overlap >= 2 * margin``
    puts them inside the neighbour's trusted part) weigh 1e-6, the ramp spans the rest of the
    overlap. Never exactly 0, so a pixel covered by a single tile (raster edges) keeps its value.
    """
    ramp = np.ones(size, dtype=np.float64)
    if overlap > 0:
        span = overlap - margin
        t = (np.arange(span) + 0.5) / span
        edge = np.concatenate([np.full(margin, 1e-6), np.maximum(0.5 - 0.5 * np.cos(np.pi * t), 1e-3)])
        ramp[:overlap] = edge
        ramp[size - overlap :] = edge[::-1]
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """One unit of streaming work: k x k tiles and the output area this block finalises."""

    row: int
    col: int
    y0: int  # raster origin of the block's accumulator
    x0: int
    owned_h: int  # rows/cols of output finalised by this block
    owned_w: int
    last_row: bool
    last_col: bool
    tile_ys: np.ndarray  # tile origins relative to (y0, x0)
    tile_xs: np.ndarray


@dataclass(frozen=True)
class TileGrid:
    """The global tile grid of one raster (tiles of ``size`` px overlapping by ``overlap``) and
    the square blocks of ``tiles_per_block``² tiles streamed through memory: the same grid for a
    whole run, a resumed run and every Dask part, so tiles never depend on how work is split."""

    height: int
    width: int
    size: int
    overlap: int
    tiles_per_block: int

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def block_span(self) -> int:
        """Rows/cols a (non-final) block owns."""
        return self.tiles_per_block * self.stride

    @property
    def acc_span(self) -> int:
        """Side of a block's accumulator: its owned span plus the spill strip."""
        return self.block_span + self.overlap

    def axis_blocks(self, length: int) -> int:
        return math.ceil(len(tile_origins(length, self.size, self.stride)) / self.tiles_per_block)

    @property
    def shape(self) -> tuple[int, int]:
        return self.axis_blocks(self.height), self.axis_blocks(self.width)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def _axis(self, index: int, length: int) -> tuple[int, int, bool, np.ndarray]:
        origins = tile_origins(length, self.size, self.stride)
        k = self.tiles_per_block
        mine = origins[index * k : (index + 1) * k]
        start = index * self.block_span
        last = (index + 1) * k >= len(origins)
        owned = (length - start) if last else self.block_span
        return start, owned, last, mine - start

    def block(self, row: int, col: int) -> Block:
        y0, oh, last_row, ty = self._axis(row, self.height)
        x0, ow, last_col, tx = self._axis(col, self.width)
        ys = np.repeat(ty, len(tx))
        xs = np.tile(tx, len(ty))
        return Block(row, col, y0, x0, oh, ow, last_row, last_col, ys, xs)

    def blocks(self) -> Iterator[Block]:
        rows, cols = self.shape
        for r in range(rows):
            for c in range(cols):
                yield self.block(r, c)


def make_grid(height: int, width: int, size: int, overlap: int, target_block_px: int = 1024) -> TileGrid:
    """A grid whose blocks own about ``target_block_px`` px a side (memory per block is fixed)."""
    stride = size - overlap
    k = max(1, round(target_block_px / stride))
    return TileGrid(height, width, size, overlap, k)
