"""Streaming tiled inference: raster + bundle -> georeferenced class map.

Work flows block by block (see :mod:`lulc.runtime.tiling`): a reader thread prefetches the
next block while the model runs on the current one and a writer thread stores the last.
Memory is bounded by the block size, not the raster size.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from lulc.runtime import kernels
from lulc.runtime.backends import Session, prepare
from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import InputRasterError
from lulc.runtime.rasters import input_nodata, open_input, read_padded
from lulc.runtime.tiling import Block, TileGrid, blend_weights, make_grid
from lulc.runtime.writer import check_output, class_map_writer, temp_path, write_block

logger = logging.getLogger(__name__)

GDAL_CACHE_MB = 64


@dataclass
class InferOptions:
    backend: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None  # None: auto_batch(tile)
    probabilities: bool = False
    confidence: bool = False
    overwrite: bool = False
    resume: bool = False
    block_px: int = 1024
    progress: bool = True


@dataclass
class RunSummary:
    input: str
    output: str
    pixels: int
    seconds: float
    mpix_per_s: float
    backend: str
    device: str
    tiles_run: int
    tiles_skipped: int
    peak_rss_mb: float


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Resume:
    """Checkpoint after each finished block row: rows done + the carried row buffer."""

    def __init__(self, final: Path, key: dict):
        self.state = temp_path(final, "resume.json")
        self.pending = temp_path(final, "resume.npy")
        self.key = key

    def load(self) -> tuple[int, np.ndarray | None]:
        if not self.state.exists():
            return 0, None
        saved = json.loads(self.state.read_text())
        if saved.get("key") != self.key:
            raise InputRasterError(
                f"cannot resume: {self.state.name} was written for other inputs or options; rerun without --resume"
            )
        return int(saved["rows_done"]), np.load(self.pending, allow_pickle=False)

    def save(self, rows_done: int, pending: np.ndarray) -> None:
        tmp = self.pending.with_suffix(".tmp.npy")
        np.save(tmp, pending)
        os.replace(tmp, self.pending)
        tmp_state = self.state.with_suffix(".tmp")
        tmp_state.write_text(json.dumps({"key": self.key, "rows_done": rows_done}))
        os.replace(tmp_state, self.state)

    def exists(self) -> bool:
        return self.state.exists()

    def clear(self) -> None:
        self.state.unlink(missing_ok=True)
        self.pending.unlink(missing_ok=True)


@dataclass
class _Slot:
    """Buffers for one block in flight, reused block after block (no per-block allocation)."""

    raw: np.ndarray  # (C, span, span) float32, NaN outside the raster
    valid: np.ndarray  # (span, span) bool
    packed: np.ndarray  # (tiles, T, T, C) float32 model input
    counts: np.ndarray  # valid pixels per tile


def auto_batch(tile: int) -> int:
    """Tiles per model call: about 0.25 MPix, where onnxruntime's CPU throughput has levelled
    off; larger batches only grow its activation arena (and peak memory)."""
    return max(1, round(2**18 / tile**2))


class _BlockRunner:
    """Per-block compute: read+pack (reader thread), model+blend (caller), finalize (writer)."""

    def __init__(self, bundle: Bundle, session: Session, grid: TileGrid, opts: InferOptions, nodata, bands: int):
        m = bundle.manifest
        self.session = session
        self.grid = grid
        self.opts = opts
        self.batch = opts.batch_size or auto_batch(grid.size)
        self.nodata = np.nan if nodata is None else float(nodata)
        self.use_nodata = nodata is not None
        self.mean = np.asarray(m.normalization.mean, dtype=np.float32)
        self.inv_std = (1.0 / np.maximum(np.asarray(m.normalization.std, dtype=np.float32), 1e-6)).astype(np.float32)
        self.k = len(m.classes)
        self.weight = blend_weights(grid.size, grid.overlap)
        span, ov, size, n = grid.acc_span, grid.overlap, grid.size, grid.tiles_per_block**2
        self.slots = [_Slot(np.empty((bands, span, span), np.float32), np.empty((span, span), np.bool_),
                            np.empty((n, size, size, bands), np.float32), np.empty(n, np.int64)) for _ in range(2)]
        # two accumulators: the writer finalises one while the model blends into the other
        self.accs = [np.empty((self.k + 1, span, span), dtype=np.float32) for _ in range(2)]
        self.pending = np.zeros((self.k + 1, ov, grid.width + span), dtype=np.float32)
        self.left = np.zeros((self.k + 1, span, ov), dtype=np.float32)
        self.tiles_run = 0
        self.tiles_skipped = 0

    def prepare(self, src, block: Block, slot: _Slot) -> _Slot:
        """Read the block and pack its tiles (runs on the reader thread, beside the model)."""
        raw = read_padded(src, block.y0, block.x0, self.grid.acc_span, slot.raw)
        kernels.mask_nodata(raw, self.nodata, self.use_nodata, slot.valid)
        n = len(block.tile_ys)
        kernels.pack_tiles(raw, slot.valid, block.tile_ys, block.tile_xs, self.mean, self.inv_std,
                           slot.packed[:n], slot.counts[:n])
        return slot

    def compute(self, block: Block, slot: _Slot, acc: np.ndarray) -> None:
        """Run the model on the block's live tiles and blend them, with the carried strips, into ``acc``."""
        g, ov = self.grid, self.grid.overlap
        acc.fill(0.0)
        n = len(block.tile_ys)
        live = np.flatnonzero(slot.counts[:n] > 0)  # all-nodata tiles never reach the model
        self.tiles_skipped += n - len(live)
        for start in range(0, len(live), self.batch):
            idx = live[start : start + self.batch]
            contiguous = idx[-1] - idx[0] == len(idx) - 1
            batch = slot.packed[idx[0] : idx[-1] + 1] if contiguous else slot.packed[idx]
            probs = self.session.run(batch)
            kernels.blend_accumulate(probs, block.tile_ys[idx], block.tile_xs[idx], self.weight, acc)
            self.tiles_run += len(idx)
        # strips spilled into this block by its left and upper neighbours
        if ov:
            if block.col > 0:
                acc[:, :, :ov] += self.left
            x0 = block.x0
            width = block.owned_w + ov
            acc[:, :ov, :width] += self.pending[:, :, x0 : x0 + width]
            self.pending[:, :, x0 : x0 + width] = 0.0
            oh, ow = block.owned_h, block.owned_w
            if not block.last_col:
                self.left[:] = acc[:, :, ow : ow + ov]
            if not block.last_row:
                self.pending[:, :, x0 : x0 + ow] += acc[:, oh : oh + ov, :ow]

    def finalize(self, block: Block, acc: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        oh, ow = block.owned_h, block.owned_w
        classes = np.empty((oh, ow), dtype=np.uint8)
        probs = np.empty((self.k, oh, ow) if self.opts.probabilities else (1, 1, 1), dtype=np.uint8)
        conf = np.empty((oh, ow) if self.opts.confidence else (1, 1), dtype=np.uint8)
        kernels.finalize(acc, valid, classes, probs, conf, self.opts.probabilities, self.opts.confidence)
        bands = [classes]
        if self.opts.probabilities:
            bands += list(probs)
        if self.opts.confidence:
            bands.append(conf)
        return bands


def _finalize_and_write(runner: _BlockRunner, dst, block: Block, acc: np.ndarray, valid: np.ndarray) -> None:
    bands = runner.finalize(block, acc, valid)
    write_block(dst, Window(block.x0, block.y0, block.owned_w, block.owned_h), bands)


def run_inference(bundle_dir: str | os.PathLike, input_path: str | os.PathLike, output_path: str | os.PathLike,
                  opts: InferOptions | None = None) -> RunSummary:
    """Classify ``input_path`` with the bundle and write a COG class map to ``output_path``."""
    opts = opts or InferOptions()
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    final = check_output(output_path, overwrite=opts.overwrite or opts.resume)
    size = opts.tile or m.tile.size
    overlap = m.tile.overlap if opts.overlap is None else opts.overlap
    if size % m.tile.divisor:
        raise InputRasterError(f"--tile {size} must be a multiple of {m.tile.divisor} for this {m.architecture}")
    if not 0 <= overlap < size:
        raise InputRasterError(f"--overlap {overlap} must be between 0 and the tile size {size}")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise InputRasterError(f"--batch-size must be at least 1, got {opts.batch_size}")
    t0 = time.perf_counter()
    # a small fixed GDAL block cache: its default (5 % of RAM) would grow with the raster size
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_input(input_path, m.input) as src:
        session = prepare(bundle, opts.backend)
        grid = make_grid(src.height, src.width, size, overlap, opts.block_px)
        runner = _BlockRunner(bundle, session, grid, opts, input_nodata(src, m.input), src.count)
        resume = _Resume(final, {"model": bundle.fingerprint(), "input": str(Path(input_path).resolve()),
                                 "tile": size, "overlap": overlap, "block_px": opts.block_px,
                                 "probabilities": opts.probabilities, "confidence": opts.confidence})
        if opts.resume:
            rows_done, pending = resume.load()
            if pending is not None:
                runner.pending[:] = pending
                logger.info("resuming after %d finished block rows", rows_done)
        else:
            resume.clear()
            rows_done = 0
        tags = {"LULC_BUNDLE": m.architecture, "LULC_TASK": m.task, "LULC_BACKEND": session.name}
        blocks = [b for b in grid.blocks() if b.row >= rows_done]
        with class_map_writer(final, src, m.classes, opts.probabilities, opts.confidence, tags,
                              reopen=rows_done > 0, keep_partial=resume.exists) as dst, \
                ThreadPoolExecutor(1, thread_name_prefix="lulc-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="lulc-write") as writer, \
                tqdm(total=len(blocks), desc="Classifying blocks", unit="block", disable=not opts.progress) as bar:
            _stream(runner, src, dst, blocks, reader, writer, resume, bar, t0)
        resume.clear()
        seconds = time.perf_counter() - t0
        pixels = src.width * src.height
    summary = RunSummary(str(input_path), str(final), pixels, round(seconds, 3), round(pixels / 1e6 / seconds, 3),
                         session.name, session.device, runner.tiles_run, runner.tiles_skipped, round(peak_rss_mb(), 1))
    logger.info("classified %s px in %.1f s (%.2f MPix/s) with %s", pixels, seconds, summary.mpix_per_s, session.device)
    return summary


def _stream(runner: _BlockRunner, src, dst, blocks: list[Block], reader, writer, resume: _Resume, bar, t0: float) -> None:
    """The pipeline: block i+1 is read and packed while block i runs and block i-1 is written."""
    slots, accs = runner.slots, runner.accs
    in_flight: list = [None, None]  # the write still using each accumulator
    row_writes = []
    future = reader.submit(runner.prepare, src, blocks[0], slots[0]) if blocks else None
    for i, block in enumerate(blocks):
        slot = future.result()
        if i + 1 < len(blocks):
            future = reader.submit(runner.prepare, src, blocks[i + 1], slots[(i + 1) % 2])
        if in_flight[i % 2] is not None:
            in_flight[i % 2].result()
        acc = accs[i % 2]
        try:
            runner.compute(block, slot, acc)
        except BaseException:
            future.cancel()
            raise
        # the valid mask is copied: the reader reuses this slot two blocks later
        valid = slot.valid[: block.owned_h, : block.owned_w].copy()
        in_flight[i % 2] = writer.submit(_finalize_and_write, runner, dst, block, acc, valid)
        row_writes.append(in_flight[i % 2])
        if block.last_col:
            for w in row_writes:
                w.result()
            row_writes.clear()
            resume.save(block.row + 1, runner.pending)
        done_px = (block.y0 + block.owned_h) * src.width
        bar.set_postfix(mpix_s=f"{done_px / 1e6 / max(time.perf_counter() - t0, 1e-9):.2f}")
        bar.update(1)
    for w in row_writes:
        w.result()


def summary_json(summary: RunSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
