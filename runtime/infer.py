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


@dataclass
class InferOptions:
    backend: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 32
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


class _BlockRunner:
    """Per-block compute: pack -> model -> blend, with the carried spill strips."""

    def __init__(self, bundle: Bundle, session: Session, grid: TileGrid, opts: InferOptions, nodata):
        m = bundle.manifest
        self.session = session
        self.grid = grid
        self.opts = opts
        self.nodata = np.nan if nodata is None else float(nodata)
        self.use_nodata = nodata is not None
        self.mean = np.asarray(m.normalization.mean, dtype=np.float32)
        self.inv_std = (1.0 / np.maximum(np.asarray(m.normalization.std, dtype=np.float32), 1e-6)).astype(np.float32)
        self.k = len(m.classes)
        self.weight = blend_weights(grid.size, grid.overlap)
        span = grid.acc_span
        self.pending = np.zeros((self.k + 1, grid.overlap, grid.width + span), dtype=np.float32)
        self.left = np.zeros((self.k + 1, span, grid.overlap), dtype=np.float32)
        self.tiles_run = 0
        self.tiles_skipped = 0

    def compute(self, block: Block, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, ov, size = self.grid, self.grid.overlap, self.grid.size
        valid = kernels.mask_nodata(raw, self.nodata, self.use_nodata)
        acc = np.zeros((self.k + 1, g.acc_span, g.acc_span), dtype=np.float32)
        n = len(block.tile_ys)
        packed = np.empty((n, size, size, raw.shape[0]), dtype=np.float32)
        counts = np.empty(n, dtype=np.int64)
        kernels.pack_tiles(raw, valid, block.tile_ys, block.tile_xs, size, self.mean, self.inv_std, packed, counts)
        live = np.flatnonzero(counts > 0)  # all-nodata tiles never reach the model
        self.tiles_skipped += n - len(live)
        for start in range(0, len(live), self.opts.batch_size):
            idx = live[start : start + self.opts.batch_size]
            probs = self.session.run(packed[idx])
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
        return acc, valid

    def finalize(self, block: Block, acc: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        oh, ow = block.owned_h, block.owned_w
        acc_o = np.ascontiguousarray(acc[:, :oh, :ow])
        classes = np.empty((oh, ow), dtype=np.uint8)
        probs = np.empty((self.k, oh, ow) if self.opts.probabilities else (1, 1, 1), dtype=np.uint8)
        conf = np.empty((oh, ow) if self.opts.confidence else (1, 1), dtype=np.uint8)
        kernels.finalize(acc_o, np.ascontiguousarray(valid[:oh, :ow]), classes, probs, conf,
                         self.opts.probabilities, self.opts.confidence)
        bands = [classes]
        if self.opts.probabilities:
            bands += list(probs)
        if self.opts.confidence:
            bands.append(conf)
        return bands


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
    t0 = time.perf_counter()
    with open_input(input_path, m.input) as src:
        session = prepare(bundle, opts.backend)
        grid = make_grid(src.height, src.width, size, overlap, opts.block_px)
        runner = _BlockRunner(bundle, session, grid, opts, input_nodata(src, m.input))
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
        n_cols = grid.shape[1]
        with class_map_writer(final, src, m.classes, opts.probabilities, opts.confidence, tags,
                              reopen=rows_done > 0, keep_partial=resume.exists) as dst, \
                ThreadPoolExecutor(1, thread_name_prefix="lulc-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="lulc-write") as writer, \
                tqdm(total=len(blocks), desc="Classifying blocks", unit="block", disable=not opts.progress) as bar:
            read = lambda b: read_padded(src, b.y0, b.x0, grid.acc_span)  # noqa: E731
            future = reader.submit(read, blocks[0]) if blocks else None
            writes = []
            for i, block in enumerate(blocks):
                raw = future.result()
                if i + 1 < len(blocks):
                    future = reader.submit(read, blocks[i + 1])
                acc, valid = runner.compute(block, raw)
                bands = runner.finalize(block, acc, valid)
                window = Window(block.x0, block.y0, block.owned_w, block.owned_h)
                writes.append(writer.submit(write_block, dst, window, bands))
                if block.col == n_cols - 1:
                    for w in writes:
                        w.result()
                    writes.clear()
                    resume.save(block.row + 1, runner.pending)
                done_px = (block.y0 + block.owned_h) * src.width
                bar.set_postfix(mpix_s=f"{done_px / 1e6 / max(time.perf_counter() - t0, 1e-9):.2f}")
                bar.update(1)
            for w in writes:
                w.result()
        resume.clear()
        seconds = time.perf_counter() - t0
        pixels = src.width * src.height
    summary = RunSummary(str(input_path), str(final), pixels, round(seconds, 3), round(pixels / 1e6 / seconds, 3),
                         session.name, session.device, runner.tiles_run, runner.tiles_skipped, round(peak_rss_mb(), 1))
    logger.info("classified %s px in %.1f s (%.2f MPix/s) with %s", pixels, seconds, summary.mpix_per_s, session.device)
    return summary


def summary_json(summary: RunSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
