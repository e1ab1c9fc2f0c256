"""Streaming tiled inference: raster + bundle -> georeferenced class map.

Work flows block by block (see :mod:`lulc.runtime.tiling`): a reader thread prefetches the
next block while the model runs on the current one and a writer thread stores the last.
Memory is bounded by the block size, not the raster size.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import NoReturn
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from lulc.runtime import kernels
from lulc.runtime.temporal_kernels import kernels_for
from lulc.runtime.backends import Session, prepare, run_all
from lulc.runtime.bandstack import write_band_stack
from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BundleError, InputRasterError, LulcError
from lulc.runtime.indices import fill_indices, index_bands
from lulc.runtime.outputs import check_outputs, locked_all, temp_path
from lulc.runtime.qgis import sidecar_paths, write_sidecars
from lulc.runtime.quicklook import write_quicklook
from lulc.runtime.rasters import input_nodata, open_input, read_padded
from lulc.runtime.resume import ResumeState
from lulc.runtime.tiling import Block, TileGrid, blend_weights, make_grid
from lulc.runtime.writer import PartialMap

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
    quicklook: str | os.PathLike | None = None  # PNG preview written after the map
    device: str = "auto"  # cpu | cuda | auto, passed to the backend
    precision: str = "auto"  # auto | fp32 | fp16 | int8: which of the bundle's gated artefacts runs
    band_names: str = "strict"  # strict | auto | ignore: how input band names must match the model's


class Interrupted(LulcError):
    """Ctrl-C or SIGTERM stopped the run; the message says whether it can be resumed."""


@dataclass
class RunSummary:
    input: str
    output: str
    pixels: int
    seconds: float
    mpix_per_s: float
    backend: str
    device: str
    precision: str
    tiles_run: int
    tiles_skipped: int
    peak_rss_mb: float | None  # None where the OS does not report it (Windows)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process: ``ru_maxrss`` is KiB on Linux, bytes on macOS."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


@dataclass
class _Slot:
    """Buffers for one block in flight, reused block after block (no per-block allocation)."""

    raw_host: np.ndarray  # (C, span, span) float32 as read, NaN outside the raster
    raw: object  # the same block where the kernels run (the host array itself on CPU)
    valid: object  # (span, span) bool
    packed: object  # (tiles, T, T, C) float32 model input
    counts: object  # valid pixels per tile
    acc: object  # (K + 1, span, span) blended sums; all zero whenever the slot is free


def auto_batch(tile: int) -> int:
    """Tiles per model call: about 0.25 MPix, where onnxruntime's CPU throughput has levelled
    off; larger batches only grow its activation arena (and peak memory)."""
    return max(1, round(2**18 / tile**2))


def batch_runs(live: np.ndarray, batch: int):
    """(start, stop) slices of consecutive live tiles, at most ``batch`` long: the model gets
    views of the packed buffer (host or device), never gathered copies."""
    start = 0
    while start < len(live):
        stop = start + 1
        while stop < len(live) and stop - start < batch and live[stop] == live[stop - 1] + 1:
            stop += 1
        yield int(live[start]), int(live[stop - 1]) + 1
        start = stop


class _BlockRunner:
    """Per-block work: read (+ pack on CPU) on the reader thread, model + blend + finalize on the caller's.

    Buffers live where the session wants its input: host memory, or CUDA device memory when
    the session takes device arrays (``device_io``); the kernels follow the arrays.
    """

    def __init__(self, bundle: Bundle, session: Session, grid: TileGrid, opts: InferOptions, nodata, bands: int):
        m = bundle.manifest
        self.on_device = bool(getattr(session, "device_io", False))
        if self.on_device:
            from lulc.runtime import cuda_kernels as mem
        else:
            mem = kernels
        self.session = session
        self.grid = grid
        self.opts = opts
        self.batch = opts.batch_size or getattr(session, "batch_size", None) or auto_batch(grid.size)
        self.nodata = np.nan if nodata is None else float(nodata)
        self.use_nodata = nodata is not None
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
            raw = host if mem is kernels else mem.empty(host.shape, np.float32)
            self.slots.append(_Slot(host, raw, mem.empty((span, span), np.bool_),
                                    mem.empty((n, size, size, bands), np.float32), mem.empty(n, np.int64),
                                    mem.zeros((self.k + 1, span, span), np.float32)))
        self.kx = kernels.for_array(self.slots[0].acc)
        self.px = kernels_for(m, self.kx)  # mask/pack: per date for time-series bundles
        self.mean, self.inv_std = mem.to_device(mean), mem.to_device(inv_std)
        self.weight = mem.to_device(blend_weights(size, ov))
        self.pending = mem.zeros((self.k + 1, ov, grid.width + span), np.float32)
        self.left = mem.zeros((self.k + 1, span, ov), np.float32)
        self.tiles_run = 0
        self.tiles_skipped = 0

    def prepare(self, src, block: Block, slot: _Slot) -> _Slot:
        """Read the block, and on the host pack its tiles too (reader thread, beside the model)."""
        read_padded(src, block.y0, block.x0, self.grid.acc_span, slot.raw_host[: self.bands])
        fill_indices(slot.raw_host, self.bands, self.index_pairs)
        if not self.on_device:
            self.pack(block, slot)
        return slot

    def pack(self, block: Block, slot: _Slot) -> None:
        """Mask nodata and cut the block into normalised model tiles, where the slot's buffers live."""
        kx = self.kx
        kx.to_device(slot.raw_host, slot.raw)
        self.px.mask_nodata(slot.raw[: self.bands], self.nodata, self.use_nodata, slot.valid)
        n = len(block.tile_ys)
        self.px.pack_tiles(slot.raw, slot.valid, block.tile_ys, block.tile_xs, self.mean, self.inv_std,
                      slot.packed[:n], slot.counts[:n])

    def launch(self, block: Block, slot: _Slot) -> tuple[list, Iterator]:
        """Queue the block's live tiles on the model; the results come back in order.

        Called for the next block before the current one is blended, so the model's callers
        never wait on a block boundary (blending, carried strips, the next read).
        """
        if self.on_device:  # device kernels are queued from this one thread, in order
            self.pack(block, slot)
        n = len(block.tile_ys)
        live = np.flatnonzero(self.kx.to_host(slot.counts[:n]) > 0)  # all-nodata tiles never reach the model
        self.tiles_skipped += n - len(live)
        runs = list(batch_runs(live, self.batch))
        return runs, run_all(self.session, [slot.packed[a:b] for a, b in runs])

    def compute(self, block: Block, slot: _Slot, launched: tuple[list, Iterator]) -> None:
        """Blend the block's model results (from :meth:`launch`), with the carried strips, into ``slot.acc``."""
        kx, acc, ov = self.kx, slot.acc, self.grid.overlap
        for (a, b), probs in zip(*launched):
            if probs.shape[1:] != (self.grid.size, self.grid.size, self.k):
                raise BundleError(f"the model returned {tuple(probs.shape)} for {b - a} tiles of {self.grid.size} px, "
                                  f"expected {self.k} class channels (bundle.json lists {self.k} classes)")
            kx.blend_accumulate(probs, block.tile_ys[a:b], block.tile_xs[a:b], self.weight, acc)
            self.tiles_run += b - a
        if not ov:
            return
        # strips spilled into this block by its left and upper neighbours, and its own spills
        x0, oh, ow = block.x0, block.owned_h, block.owned_w
        # a last-column block may own more than span - overlap columns, and spills nothing right
        width = min(ow + ov, self.grid.acc_span)
        if block.col > 0:
            kx.add_into(acc[:, :, :ov], self.left)
        kx.add_into(acc[:, :ov, :width], self.pending[:, :, x0 : x0 + width])
        kx.zero(self.pending[:, :, x0 : x0 + width])
        if not block.last_col:
            kx.copy_into(self.left, acc[:, :, ow : ow + ov])
        if not block.last_row:
            kx.add_into(self.pending[:, :, x0 : x0 + ow], acc[:, oh : oh + ov, :ow])

    def finalize(self, block: Block, slot: _Slot) -> list[np.ndarray]:
        """Class (and optional probability/confidence) bands of the block's owned area, on the host."""
        oh, ow, kx = block.owned_h, block.owned_w, self.kx
        want_p, want_c = self.opts.probabilities, self.opts.confidence
        classes = kx.empty((oh, ow), np.uint8)
        probs = kx.empty((self.k, oh, ow) if want_p else (1, 1, 1), np.uint8)
        conf = kx.empty((oh, ow) if want_c else (1, 1), np.uint8)
        kx.finalize(slot.acc, slot.valid, classes, probs, conf, want_p, want_c)
        kx.zero(slot.acc)  # the slot is free for its next block
        bands = [kx.to_host(classes)]
        if want_p:
            bands += list(kx.to_host(probs))
        if want_c:
            bands.append(kx.to_host(conf))
        return bands


def run_inference(bundle_dir: str | os.PathLike, input_path: str | os.PathLike | Sequence[str | os.PathLike],
                  output_path: str | os.PathLike, opts: InferOptions | None = None) -> RunSummary:
    """Classify ``input_path`` with the bundle and write a COG class map to ``output_path``.

    Several co-registered rasters (as given to ``lulc train --image``) are classified as
    one stack of their bands, in order. Every output is checked against the inputs, the
    bundle and each other before any work, and locked against a second run for the whole
    run; the map and then the quicklook are renamed into place only when complete.
    """
    opts = opts or InferOptions()
    bundle = Bundle.load(bundle_dir)
    inputs = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    final = Path(output_path)
    wanted = {"output": final, **sidecar_paths(final), **({"quicklook": opts.quicklook} if opts.quicklook else {})}
    paths = check_outputs(wanted, inputs, [bundle.root], opts.overwrite)
    with locked_all(paths.values()):
        check_outputs(wanted, inputs, [bundle.root], opts.overwrite)  # again, now that no other run can change them
        if len(inputs) == 1:
            summary = _run(bundle, inputs[0], inputs, final, opts)
        else:
            stacked = temp_path(final, "inputs.vrt")
            try:
                summary = _run(bundle, write_band_stack(inputs, stacked), inputs, final, opts)
            finally:
                stacked.unlink(missing_ok=True)
        classes = bundle.manifest.classes
        write_sidecars(final, classes, [c.id for c in classes])
        if "quicklook" in paths:
            write_quicklook(final, paths["quicklook"])
    return summary


def _tile_geometry(m, opts: InferOptions, height: int, width: int) -> tuple[int, int]:
    """(tile, overlap) for this raster: the bundle's unless overridden, and never larger than
    the raster needs (one tile then covers it, so no overlap), which bounds the buffers."""
    size = opts.tile or m.tile.size
    overlap = m.tile.overlap if opts.overlap is None else opts.overlap
    if size < 1:
        raise InputRasterError(f"--tile must be a positive number of px, got {size}")
    if size % m.tile.divisor:
        raise InputRasterError(f"--tile {size} must be a multiple of {m.tile.divisor} for this {m.architecture}")
    if not 0 <= overlap < size:
        raise InputRasterError(f"--overlap {overlap} must be between 0 and the tile size {size}")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise InputRasterError(f"--batch-size must be at least 1, got {opts.batch_size}")
    whole = -(-max(height, width) // m.tile.divisor) * m.tile.divisor
    if size >= whole:
        return whole, 0
    return size, overlap


def _run(bundle: Bundle, source: str | os.PathLike, inputs: list, final: Path, opts: InferOptions) -> RunSummary:
    """Classify ``source``: the one input raster, or the VRT stacking ``inputs``."""
    m = bundle.manifest
    t0 = time.perf_counter()
    threading.Thread(target=kernels.warm_up, name="lulc-warm-up", daemon=True).start()
    # A small fixed GDAL block cache: its default (5 % of RAM) would grow with the raster size.
    # Uncompressed GeoTIFFs are read straight into our buffer, bypassing that cache (half the
    # CPU time of a cached read; compressed files ignore the option).
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GTIFF_DIRECT_IO=True), \
            open_input(source, m.input, band_names=opts.band_names, normalization=m.normalization) as src:
        size, overlap = _tile_geometry(m, opts, src.height, src.width)
        session = prepare(bundle, opts.backend, opts.device, opts.precision)
        grid = make_grid(src.height, src.width, size, overlap, opts.block_px)
        try:
            runner = _BlockRunner(bundle, session, grid, opts, input_nodata(src, m.input), src.count)
        except MemoryError:
            raise InputRasterError(f"--tile {size} needs more memory than this machine has; use a smaller --tile") from None
        resume = ResumeState(final, {"model": bundle.fingerprint(), "input": "+".join(str(Path(p).resolve()) for p in inputs),
                                     "tile": size, "overlap": overlap, "block_px": opts.block_px,
                                     "probabilities": opts.probabilities, "confidence": opts.confidence})
        partial = PartialMap(final, src, m.classes, opts.probabilities, opts.confidence,
                             {"LULC_BUNDLE": m.architecture, "LULC_TASK": m.task, "LULC_BACKEND": session.name})
        rows_done = _restore(runner, grid, resume, partial) if opts.resume else 0
        if not rows_done:
            resume.clear()
            partial.create()
        blocks = [b for b in grid.blocks() if b.row >= rows_done]
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="lulc-read") as reader, \
                    ThreadPoolExecutor(1, thread_name_prefix="lulc-write") as writer, \
                    tqdm(total=len(blocks), desc="Classifying blocks", unit="block", disable=not opts.progress) as bar:
                _stream(runner, src, partial, blocks, reader, writer, resume, bar, t0)
            if not rows_done and not runner.tiles_run:
                resume.clear()
                raise InputRasterError(f"{Path(str(source)).name if len(inputs) == 1 else 'the input stack'} has no valid "
                                       "pixel (all nodata or NaN): nothing to classify")
            partial.finish()
        except BaseException as exc:
            _stop(partial, resume, grid, exc)
        resume.clear()
        seconds = time.perf_counter() - t0
        pixels = src.width * src.height
    summary = RunSummary(", ".join(map(str, inputs)), str(final), pixels, round(seconds, 3), round(pixels / 1e6 / seconds, 3),
                         session.name, session.device, session.precision, runner.tiles_run, runner.tiles_skipped, peak_rss_mb())
    logger.info("classified %s px in %.1f s (%.2f MPix/s) with %s at %s", pixels, seconds, summary.mpix_per_s,
                session.device, session.precision)
    return summary


def _restore(runner: _BlockRunner, grid: TileGrid, resume: ResumeState, partial: PartialMap) -> int:
    """Block rows an interrupted run finished and that are verifiably on disk (0: start over)."""
    rows_done, strip, x0 = resume.load()
    if not rows_done:
        logger.info("nothing to resume for %s; starting from the beginning", partial.final)
        return 0
    windows = [[_window(b) for b in grid.blocks() if b.row == r] for r in range(rows_done)]
    if not partial.reopen(windows, resume.row_crcs):
        logger.warning("the partial map of %s does not match its resume state; starting over", partial.final)
        return 0
    pending = np.zeros(runner.pending.shape, np.float32)
    pending[:, :, x0 : x0 + strip.shape[2]] = strip
    runner.kx.to_device(pending, runner.pending)
    logger.info("resuming after %d of %d finished block rows", rows_done, grid.shape[0])
    return rows_done


def _stop(partial: PartialMap, resume: ResumeState, grid: TileGrid, exc: BaseException) -> NoReturn:
    """Leave a resumable state where finished rows exist, nothing otherwise; re-raise ``exc``
    (an interrupt as one line saying what can be resumed)."""
    if resume.exists():
        partial.close()
        kept = f"{len(resume.row_crcs)} of {grid.shape[0]} block rows are kept: rerun with --resume to continue"
    else:
        partial.discard()
        kept = "no output was written"
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"interrupted; {kept}") from None
    raise exc


def _stream(runner: _BlockRunner, src, partial: PartialMap, blocks: list[Block], reader, writer,
            resume: ResumeState, bar, t0: float) -> None:
    """The pipeline: while block i runs, block i+1 is read and packed and block i-1 is finalised
    and written, so the model thread does nothing but model calls and blending. Block i+1's
    tiles are queued on the model before block i is blended, so the model never waits for a
    block boundary. After each block row, the partial map is synced to disk and only then
    counted in the resume state."""

    def finish(block: Block, slot: _Slot) -> None:
        partial.write_block(_window(block), runner.finalize(block, slot))

    def refill(finished, block: Block, slot: _Slot) -> _Slot:
        finished.result()  # the slot's previous block is finalised: its buffers are free
        return runner.prepare(src, block, slot)

    reads = [reader.submit(runner.prepare, src, b, s) for b, s in zip(blocks[:2], runner.slots)]
    row_writes = []
    queued = runner.launch(blocks[0], reads[0].result()) if blocks else None
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
            job = writer.submit(partial.write_block, _window(block), runner.finalize(block, slot))
        else:
            job = writer.submit(finish, block, slot)
        if i + 2 < len(blocks):
            reads.append(reader.submit(refill, job, blocks[i + 2], slot))
        row_writes.append(job)
        if block.last_col:
            for w in row_writes:
                w.result()
            row_writes.clear()
            resume.save(block.row + 1, runner.kx.to_host(runner.pending), partial.sync())
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


def _window(block: Block) -> Window:
    return Window(block.x0, block.y0, block.owned_w, block.owned_h)


def summary_json(summary: RunSummary) -> str:
    return json.dumps(asdict(summary), indent=2)
