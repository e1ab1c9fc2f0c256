"""Streaming tiled inference: raster + bundle -> georeferenced class map (``lulc-infer``).

This module is the run around the block pipeline (:mod:`lulc.runtime.pipeline`): outputs
checked and locked, the input opened and checked, the resume state, and the last steps in
order: the COG, the GIS sidecars, the quicklook.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import rasterio
from tqdm.auto import tqdm

from lulc.runtime.backends import session_identity
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import InputRasterError, Interrupted, NoSpaceError
from lulc.runtime.distributed import run_parts
from lulc.runtime.io.bandstack import write_band_stack
from lulc.runtime.io.identity import inputs_identity
from lulc.runtime.io.mapformat import band_layout
from lulc.runtime.io.outputs import check_outputs, locked_all, temp_path
from lulc.runtime.io.publish import Publication
from lulc.runtime.io.qgis import sidecar_paths, write_sidecars
from lulc.runtime.io.quicklook import write_quicklook
from lulc.runtime.io.rasters import open_input
from lulc.runtime.io.resume import ResumeState
from lulc.runtime.io.space import no_space
from lulc.runtime.io.writer import PartialMap, map_tags
from lulc.runtime.kernels.warmup import warm_up
from lulc.runtime.options import GDAL_CACHE_MB, InferOptions, RunFigures, tile_geometry
from lulc.runtime.pipeline import BlockRunner, block_runner, block_window, stream_blocks
from lulc.runtime.postprocess.vectorize import write_vector
from lulc.runtime.session import open_session
from lulc.runtime.tiling import TileGrid

logger = logging.getLogger(__name__)

@dataclass
class RunSummary:
    """What a run did, for the log line and ``--json``: inputs, output, speed, engine, tiles, memory."""
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
    scene_stride: int | None  # px per class cell of a --scene-stride run
    ensemble: list[str]  # the bundles averaged (the first is the run's own)
    tta: str | None
    peak_rss_mb: float | None  # None where the OS does not report it (Windows)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process: ``ru_maxrss`` is KiB on Linux, bytes on macOS."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def run_inference(bundle_dir: str | os.PathLike, input_path: str | os.PathLike | Sequence[str | os.PathLike],
                  output_path: str | os.PathLike, opts: InferOptions | None = None) -> RunSummary:
    """Classify ``input_path`` with the bundle and write a COG class map to ``output_path``.

    Several co-registered rasters (as given to ``lulc train --image``) are classified as
    one stack of their bands, in order. Every output is checked against the inputs, the
    bundle and each other before any work, and locked against a second run for the whole
    run; the map and then the quicklook are renamed into place only when complete.
    """
    opts = opts or InferOptions()
    # members are opened by path, possibly on Dask workers: absolute paths
    opts = replace(opts, ensemble=tuple(str(Path(p).resolve()) for p in opts.ensemble))
    opts.post.check()
    bundle = Bundle.load(bundle_dir)
    inputs = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    final = Path(output_path)
    wanted = {"output": final, **sidecar_paths(final), **({"quicklook": opts.quicklook} if opts.quicklook else {}),
              **({"vector": opts.vector} if opts.vector else {})}
    own = Publication({k: Path(v) for k, v in wanted.items()}).own_outputs() if opts.resume else set()
    paths = check_outputs(wanted, inputs, [bundle.root, *opts.ensemble], opts.overwrite, own)
    with locked_all(paths.values()):
        own = Publication(paths).own_outputs() if opts.resume else set()
        check_outputs(wanted, inputs, [bundle.root, *opts.ensemble], opts.overwrite, own)  # again, now that no other run can change them
        publication = Publication(paths)
        if opts.resume and publication.finish_interrupted():
            return _completed(final, inputs)
        try:
            if len(inputs) == 1:
                summary = _run(bundle, inputs[0], inputs, publication, opts)
            else:
                stacked = temp_path(final, "inputs.vrt")
                try:
                    summary = _run(bundle, write_band_stack(inputs, stacked), inputs, publication, opts)
                finally:
                    stacked.unlink(missing_ok=True)
            staged = {what: publication.staged(what) for what in sidecar_paths(final)}
            layout = band_layout(bundle.manifest.map_classes, opts.probabilities, opts.confidence, opts.uncertainty)
            write_sidecars(staged, bundle.manifest.map_classes, final, publication.need, layout)
            if "quicklook" in paths:
                write_quicklook(publication.staged("output"), publication.staged("quicklook"), final=paths["quicklook"],
                                need=publication.need)
            if "vector" in paths:
                write_vector(publication.staged("output"), publication.staged("vector"), paths["vector"], opts.simplify)
            publication.commit()
        except BaseException as exc:
            publication.discard(work_files=isinstance(exc, NoSpaceError))
            if isinstance(exc, NoSpaceError) and exc.need is None and publication.need:
                raise no_space(Path(str(exc.final)), publication.need) from None  # with what the run needs
            if isinstance(exc, KeyboardInterrupt):  # the map is classified; only its files were being written
                raise Interrupted("interrupted while writing the map's files: rerun with --resume to finish them") from None
            raise
    return summary


def _completed(final: Path, inputs: list) -> RunSummary:
    """The summary of a run whose last renames ``--resume`` completed (no pixel ran now)."""
    with rasterio.open(final) as src:
        pixels, tags = src.width * src.height, src.tags()
    logger.info("%s is complete: the interrupted run had finished it", final)
    return RunSummary(", ".join(map(str, inputs)), str(final), pixels, 0.0, 0.0, tags.get("LULC_BACKEND", "-"), "-",
                      tags.get("LULC_PRECISION", "-"), 0, 0, None, [], None, peak_rss_mb())


def _run(bundle: Bundle, source: str | os.PathLike, inputs: list, publication: Publication, opts: InferOptions) -> RunSummary:
    """Classify ``source`` (the one input raster, or the VRT stacking ``inputs``) here or, with
    ``opts.dask``, on a Dask cluster; either way the COG is staged here for ``publication``."""
    m = bundle.manifest
    t0 = time.perf_counter()
    final = publication.final
    # A small fixed GDAL block cache: its default (5 % of RAM) would grow with the raster size.
    # Uncompressed GeoTIFFs are read straight into our buffer, bypassing that cache (half the
    # CPU time of a cached read; compressed files ignore the option).
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GTIFF_DIRECT_IO=True), \
            open_input(source, m.input, band_names=opts.band_names, normalization=m.normalization) as src:
        geometry = tile_geometry(bundle, opts, src.height, src.width)
        opts.post.threshold(src)  # --mmu in hectares needs a projected CRS: said before any work
        key = {"model": bundle.fingerprint(), "inputs": inputs_identity(src.files, skip=[source] if len(inputs) > 1 else []),
               "tile": geometry[0], "overlap": geometry[1], "block_px": opts.block_px, "scene_stride": opts.scene_stride,
               "probabilities": opts.probabilities, "confidence": opts.confidence, "band_names": opts.band_names,
               "uncertainty": opts.uncertainty, "tta": opts.tta, "post": asdict(opts.post),
               "requested": [opts.backend, opts.device, opts.precision]}
        if opts.dask:
            figures = run_parts(bundle, source, publication, opts, key, src, geometry)
        else:
            figures = _run_here(bundle, src, publication, opts, geometry, key)
        if not figures.tiles_run and not figures.resumed:
            raise InputRasterError(f"{Path(str(source)).name if len(inputs) == 1 else 'the input stack'} has no valid "
                                   "pixel (all nodata or NaN): nothing to classify")
        seconds = time.perf_counter() - t0
        pixels = src.width * src.height
    summary = RunSummary(", ".join(map(str, inputs)), str(final), pixels, round(seconds, 3), round(pixels / 1e6 / seconds, 3),
                         figures.backend, figures.device, figures.precision, figures.tiles_run,
                         figures.tiles_skipped, opts.scene_stride, [str(bundle.root), *opts.ensemble], opts.tta,
                         peak_rss_mb())
    logger.info("classified %s px in %.1f s (%.2f MPix/s) with %s at %s", pixels, seconds, summary.mpix_per_s,
                summary.device, summary.precision)
    return summary


def _run_here(bundle: Bundle, src: rasterio.io.DatasetReader, publication: Publication, opts: InferOptions,
              geometry: tuple[int, int], key: dict) -> RunFigures:
    """The single-process run: stream every block through this process, resumably. The
    resume state is keyed by everything that decides a pixel (``key``, and the artefact that
    really runs), so a resume after anything changed starts over."""
    m = bundle.manifest
    final = publication.final
    t0 = time.perf_counter()
    threading.Thread(target=warm_up, name="lulc-warm-up", daemon=True).start()
    session = open_session(bundle, opts, opts.cores)
    grid, runner = block_runner(bundle, session, src, opts, geometry)
    resume = ResumeState(final, {**key, "session": session_identity(bundle, session)})
    # Bayesian smoothing reads the probabilities back: the partial map keeps them
    partial = PartialMap(final, src, m.map_classes, opts.keeps_probabilities, opts.confidence,
                         map_tags(bundle, session, opts.scene_stride), opts.uncertainty)
    publication.need = partial.need
    rows_done = _restore(runner, grid, resume, partial) if opts.resume else 0
    try:
        if not rows_done:
            resume.clear()
            partial.create()
        blocks = [b for b in grid.blocks() if b.row >= rows_done]
        with ThreadPoolExecutor(1, thread_name_prefix="lulc-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="lulc-write") as writer, \
                tqdm(total=len(blocks), desc="Classifying blocks", unit="block", disable=not opts.progress) as bar:
            stream_blocks(runner, src, partial, blocks, reader, writer, resume, bar, t0)
        if rows_done or runner.tiles_run:
            publication.work_files += [partial.path, resume.path]
            partial.finish(publication.staged("output"), opts.product(bundle))
        else:  # all nodata: the caller says so, and nothing is kept
            resume.clear()
            partial.discard()
    except BaseException as exc:
        _stop(partial, resume, grid, exc)
    return RunFigures(session.name, session.device, session.precision, runner.tiles_run, runner.tiles_skipped,
                      bool(rows_done))


def _restore(runner: BlockRunner, grid: TileGrid, resume: ResumeState, partial: PartialMap) -> int:
    """Block rows an interrupted run finished and that are verifiably on disk (0: start over)."""
    rows_done, strip, x0 = resume.load()
    if not rows_done:
        logger.info("nothing to resume for %s; starting from the beginning", partial.final)
        return 0
    windows = [[block_window(b) for b in grid.blocks() if b.row == r] for r in range(rows_done)]
    if not partial.reopen(windows, resume.row_crcs):
        logger.warning("the partial map of %s does not match its resume state; starting over", partial.final)
        return 0
    assert strip is not None  # load() returns a strip with every row count above 0
    pending = np.zeros(runner.pending.shape, np.float32)
    pending[:, :, x0 : x0 + strip.shape[2]] = strip
    runner.ops.arrays.to_device(pending, runner.pending)
    logger.info("resuming after %d of %d finished block rows", rows_done, grid.shape[0])
    return rows_done


def _stop(partial: PartialMap, resume: ResumeState, grid: TileGrid, exc: BaseException) -> NoReturn:
    """Leave a resumable state where finished rows exist, nothing otherwise (nor after a full
    disk, whose files would only keep it full); re-raise ``exc`` (an interrupt as one line
    saying what can be resumed)."""
    if resume.exists() and not isinstance(exc, NoSpaceError):
        partial.close()
        kept = f"{len(resume.row_crcs)} of {grid.shape[0]} block rows are kept: rerun with --resume to continue"
    else:
        partial.discard()
        resume.clear()
        kept = "no output was written"
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"interrupted; {kept}") from None
    raise exc


def summary_json(summary: RunSummary) -> str:
    """The run summary as the JSON ``lulc-infer --json`` prints."""
    return json.dumps(asdict(summary), indent=2)
