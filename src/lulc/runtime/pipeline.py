"""The block pipeline every run shares: read, pack, model, blend, finalise, write.

Work flows block by block (see :mod:`lulc.runtime.tiling`): a reader thread prefetches the
next block while the model runs on the current one and a writer thread stores the last.
Memory is bounded by the block size, not the raster size. :func:`stream_blocks` drives it
over any run of blocks in raster order, for a whole raster (:mod:`lulc.runtime.infer`) or a
band of block rows of one (:mod:`lulc.runtime.distributed`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio.io
from rasterio.windows import Window

from lulc.runtime.backends import Session, run_all
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, InputRasterError
from lulc.runtime.indices import fill_indices, index_bands
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.io.rasters import input_nodata, read_padded
from lulc.runtime.kernels import block_ops
from lulc.runtime.kernels import cpu as kernels_cpu
from lulc.runtime.options import InferOptions
from lulc.runtime.tiling import Block, TileGrid, blend_weights, make_grid

if TYPE_CHECKING:
    from tqdm import tqdm

    from lulc.runtime.io.resume import ResumeState


class BlockSink(Protocol):
    """Where finished blocks go: the partial map of a run, or one part of a distributed run."""

    def write_block(self, window: Window, bands: list[np.ndarray]) -> None: ...

    def sync(self) -> int: ...


@dataclass
class _Slot:
    """Buffers for one block in flight, reused block after block (no per-block allocation)."""

    raw_host: np.ndarray  # (C, span, span) float32 as read, NaN outside the raster
    # host NumPy or CUDA device arrays, where the session wants them
    raw: Any  # the same block where the kernels run (the host array itself on CPU)
    valid: Any  # (span, span) bool
    packed: Any  # (tiles, T, T, C) float32 model input, or (tiles, C, T, T) channels first
    counts: Any  # valid pixels per tile
    acc: Any  # (K + 1, span, span) blended sums; all zero whenever the slot is free


def auto_batch(tile: int) -> int:
    """Tiles per model call: about 0.25 MPix, where onnxruntime's CPU throughput has levelled
    off; larger batches only grow its activation arena (and peak memory)."""
    return max(1, round(2**18 / tile**2))


def batch_runs(live: np.ndarray, batch: int) -> Iterator[tuple[int, int]]:
    """(start, stop) slices of consecutive live tiles, at most ``batch`` long: the model gets
    views of the packed buffer (host or device), never gathered copies."""
    start = 0
    while start < len(live):
        stop = start + 1
        while stop < len(live) and stop - start < batch and live[stop] == live[stop - 1] + 1:
            stop += 1
        yield int(live[start]), int(live[stop - 1]) + 1
        start = stop


class BlockRunner:
    """Per-block work: read (+ pack on CPU) on the reader thread, model + blend + finalize on the caller's.

    Buffers live where the session wants its input: host memory, or CUDA device memory when
    the session takes device arrays (``device_io``); the kernels follow the arrays.
    """

    def __init__(self, bundle: Bundle, session: Session, grid: TileGrid, opts: InferOptions, nodata: float | None, bands: int):
        m = bundle.manifest
        self.on_device = session.device_io
        self.ops = block_ops(self.on_device, m, nodata, session.layout)
        arrays = self.ops.arrays  # the buffers live where the session wants its input
        self.session = session
        self.grid = grid
        self.opts = opts
        self.batch = opts.batch_size or session.batch_size or auto_batch(grid.size)
        mean = np.asarray(m.normalization.mean, dtype=np.float32)
        inv_std = (1.0 / np.maximum(np.asarray(m.normalization.std, dtype=np.float32), 1e-6)).astype(np.float32)
        self.k = len(m.classes)
        # derived indices (--indices at training) are computed after the read, beside the bands
        self.bands = bands
        self.index_pairs = index_bands(m.input.bands, m.input.derived)
        bands += len(self.index_pairs)
        span, ov, size, n = grid.acc_span, grid.overlap, grid.size, grid.tiles_per_block**2
        self.slots = []
        for _ in range(2):  # the reader fills one while the model works on the other
            host = np.empty((bands, span, span), np.float32)
            raw = arrays.empty(host.shape, np.float32) if self.on_device else host
            self.slots.append(_Slot(host, raw, arrays.empty((span, span), np.bool_),
                                    arrays.empty(self.ops.tile_shape(n, size, bands), np.float32), arrays.empty(n, np.int64),
                                    arrays.zeros((self.k + 1, span, span), np.float32)))
        self.mean, self.inv_std = arrays.to_device(mean), arrays.to_device(inv_std)
        self.weight = arrays.to_device(blend_weights(size, ov, min(session.context_px, ov // 2)))
        self.pending = arrays.zeros((self.k + 1, ov, grid.width + span), np.float32)
        self.left = arrays.zeros((self.k + 1, span, ov), np.float32)
        self.tiles_run = 0
        self.tiles_skipped = 0
        # model id -> the value maps write (the label raster's own codes), None where they are the ids
        values = [c.id for c in m.map_classes]
        self.measure = kernels_cpu.MEASURES[opts.uncertainty] if opts.uncertainty else -1
        self.entropy = arrays.to_device(kernels_cpu.entropy_table(self.k))
        self.class_values = None if values == list(range(self.k)) else np.array(
            [*values, *range(len(values), 255), NODATA_CLASS], np.uint8)
        #: raster row where this run's output starts; blocks above it are a halo whose tiles
        #: run only where they spill into it (a band of rows of a distributed run)
        self.first_row = 0

    def prepare(self, src: rasterio.io.DatasetReader, block: Block, slot: _Slot) -> _Slot:
        """Read the block, and on the host pack its tiles too (reader thread, beside the model)."""
        read_padded(src, block.y0, block.x0, self.grid.acc_span, slot.raw_host[: self.bands])
        fill_indices(slot.raw_host, self.bands, self.index_pairs)
        if not self.on_device:
            self.pack(block, slot)
        return slot

    def pack(self, block: Block, slot: _Slot) -> None:
        """Mask nodata and cut the block into normalised model tiles, where the slot's buffers live."""
        self.ops.arrays.to_device(slot.raw_host, slot.raw)
        self.ops.mask(slot.raw[: self.bands], slot.valid)
        n = len(block.tile_ys)
        self.ops.pack(slot.raw, slot.valid, block.tile_ys, block.tile_xs, self.mean, self.inv_std,
                      slot.packed[:n], slot.counts[:n])

    def launch(self, block: Block, slot: _Slot) -> tuple[list, Iterator]:
        """Queue the block's live tiles on the model; the results come back in order.

        Called for the next block before the current one is blended, so the model's callers
        never wait on a block boundary (blending, carried strips, the next read).
        """
        if self.on_device:  # device kernels are queued from this one thread, in order
            self.pack(block, slot)
        n = len(block.tile_ys)
        live = self.ops.arrays.to_host(slot.counts[:n]) > 0  # all-nodata tiles never reach the model
        self.tiles_skipped += n - int(live.sum())
        if block.y0 < self.first_row:  # a halo block: only tiles reaching the rows this run owns
            live &= block.y0 + block.tile_ys + self.grid.size > self.first_row
        live = np.flatnonzero(live)
        runs = list(batch_runs(live, self.batch))
        return runs, run_all(self.session, [slot.packed[a:b] for a, b in runs])

    def compute(self, block: Block, slot: _Slot, launched: tuple[list, Iterator]) -> None:
        """Blend the block's model results (from :meth:`launch`), with the carried strips, into ``slot.acc``."""
        arrays, acc, ov = self.ops.arrays, slot.acc, self.grid.overlap
        for (a, b), probs in zip(*launched):
            if tuple(probs.shape[1:]) != self.ops.tile_shape(0, self.grid.size, self.k)[1:]:
                raise BundleError(f"the model returned {tuple(probs.shape)} for {b - a} tiles of {self.grid.size} px, "
                                  f"expected {self.k} class channels (bundle.json lists {self.k} classes)")
            self.ops.blend(probs, block.tile_ys[a:b], block.tile_xs[a:b], self.weight, acc)
            self.tiles_run += b - a
        if not ov:
            return
        # strips spilled into this block by its left and upper neighbours, and its own spills
        x0, oh, ow = block.x0, block.owned_h, block.owned_w
        # a last-column block may own more than span - overlap columns, and spills nothing right
        width = min(ow + ov, self.grid.acc_span)
        if block.col > 0:
            arrays.add_into(acc[:, :, :ov], self.left)
        arrays.add_into(acc[:, :ov, :width], self.pending[:, :, x0 : x0 + width])
        arrays.zero(self.pending[:, :, x0 : x0 + width])
        if not block.last_col:
            arrays.copy_into(self.left, acc[:, :, ow : ow + ov])
        if not block.last_row:
            arrays.add_into(self.pending[:, :, x0 : x0 + ow], acc[:, oh : oh + ov, :ow])

    def finalize(self, block: Block, slot: _Slot) -> list[np.ndarray]:
        """Class (and optional probability/confidence) bands of the block's owned area, on the host."""
        oh, ow, arrays = block.owned_h, block.owned_w, self.ops.arrays
        want_p, want_c = self.opts.probabilities, self.opts.confidence
        classes = arrays.empty((oh, ow), np.uint8)
        probs = arrays.empty((self.k, oh, ow) if want_p else (1, 1, 1), np.uint8)
        conf = arrays.empty((oh, ow) if want_c else (1, 1), np.uint8)
        arrays.finalize(slot.acc, slot.valid, classes, probs, conf, want_p, want_c)
        if self.measure >= 0:
            unsure = arrays.empty((oh, ow), np.uint8)
            arrays.uncertainty(slot.acc, slot.valid, unsure, self.measure, self.entropy)
        arrays.zero(slot.acc)  # the slot is free for its next block
        bands = [arrays.to_host(classes) if self.class_values is None else self.class_values[arrays.to_host(classes)]]
        if want_p:
            bands += list(arrays.to_host(probs))
        if want_c:
            bands.append(arrays.to_host(conf))
        if self.measure >= 0:
            bands.append(arrays.to_host(unsure))
        return bands


def block_runner(bundle: Bundle, session: Session, src: rasterio.io.DatasetReader, opts: InferOptions,
                 geometry: tuple[int, int]) -> tuple[TileGrid, BlockRunner]:
    """The raster's global tile grid for ``geometry`` (tile, overlap) and a runner over it; a
    tile whose buffers do not fit in memory is one line."""
    size, overlap = geometry
    grid = make_grid(src.height, src.width, size, overlap, opts.block_px)
    try:
        return grid, BlockRunner(bundle, session, grid, opts, input_nodata(src, bundle.manifest.input), src.count)
    except MemoryError:
        raise InputRasterError(f"--tile {size} needs more memory than this machine has; use a smaller --tile") from None


def stream_blocks(runner: BlockRunner, src: rasterio.io.DatasetReader, partial: BlockSink, blocks: list[Block],
                  reader: ThreadPoolExecutor, writer: ThreadPoolExecutor, resume: ResumeState | None, bar: tqdm,
                  t0: float) -> None:
    """The pipeline: while block i runs, block i+1 is read and packed and block i-1 is finalised
    and written, so the model thread does nothing but model calls and blending. Block i+1's
    tiles are queued on the model before block i is blended, so the model never waits for a
    block boundary. After each block row, the partial map is synced to disk and only then
    counted in the resume state."""

    def finish(block: Block, slot: _Slot) -> None:
        partial.write_block(block_window(block), runner.finalize(block, slot))

    def refill(finished: Future, block: Block, slot: _Slot) -> _Slot:
        finished.result()  # the slot's previous block is finalised: its buffers are free
        return runner.prepare(src, block, slot)

    if not blocks:
        return
    reads = [reader.submit(runner.prepare, src, b, s) for b, s in zip(blocks[:2], runner.slots)]
    row_writes = []
    queued = runner.launch(blocks[0], reads[0].result())
    for i, block in enumerate(blocks):
        slot, launched = reads[i].result(), queued
        try:
            if i + 1 < len(blocks):  # the next block's tiles queue behind this block's
                queued = runner.launch(blocks[i + 1], reads[i + 1].result())
            runner.compute(block, slot, launched)
        except BaseException:
            _cancel(reads[i + 1 :], launched, queued)
            raise
        if runner.on_device:  # device kernels stay queued in order on this thread
            job = writer.submit(partial.write_block, block_window(block), runner.finalize(block, slot))
        else:
            job = writer.submit(finish, block, slot)
        if i + 2 < len(blocks):
            reads.append(reader.submit(refill, job, blocks[i + 2], slot))
        row_writes.append(job)
        if block.last_col:
            for w in row_writes:
                w.result()
            row_writes.clear()
            crc = partial.sync()
            if resume is not None:
                resume.save(block.row + 1, runner.ops.arrays.to_host(runner.pending), crc)
        done_px = (block.y0 + block.owned_h) * src.width
        bar.set_postfix(mpix_s=f"{done_px / 1e6 / max(time.perf_counter() - t0, 1e-9):.2f}")
        bar.update(1)
    for w in row_writes:
        w.result()


def _cancel(reads: list, *queued: tuple[list, Iterator]) -> None:
    """Drop work not yet started: pending reads and queued model batches."""
    for f in reads:
        f.cancel()
    for _, results in queued:
        getattr(results, "close", lambda: None)()


def block_window(block: Block) -> Window:
    """The raster window a block owns (where its finished pixels are written)."""
    return Window(block.x0, block.y0, block.owned_w, block.owned_h)


