"""``lulc-infer --dask ADDRESS``: one raster classified by a Dask cluster, same map as one process.

The raster is cut into bands of whole block rows of the global tile grid. Each task reads
its rows plus a halo (the tiles of the block row above that spill into them), runs the
same block pipeline as a single-process run (:mod:`lulc.runtime.pipeline`: same kernels,
same blending order), and writes its rows as a GeoTIFF *part* in a hidden folder beside the
output, renamed into place only when complete. Workers need not share memory, only a path
to the input and to that folder (a shared file system, or a GDAL URL for the input).

Why parts and not a distributed COG writer: the COG is written after the model by the same
code as a single-process run's (mode overviews, compression), from a VRT that stacks the
parts without copying them, and each part carries the class band's colour table, names and
the probability bands as a single-process partial map does; a finished part survives a lost
worker or a Ctrl-C, so a rerun redoes only the rest.

Each worker process loads the bundle and opens its model once (a cache keyed by the
bundle's checksum); sessions and datasets are never pickled. A worker runs one lulc task
at a time with as many model threads as it has Dask threads, so workers that share a box
do not oversubscribe it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
from rasterio.errors import RasterioError
from tqdm.auto import tqdm

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, Interrupted, LulcError, SettingError
from lulc.runtime.io.outputs import temp_path
from lulc.runtime.io.publish import Publication
from lulc.runtime.io.rasters import open_input
from lulc.runtime.io.space import write_error
from lulc.runtime.io.vrt import stack_rows
from lulc.runtime.io.writer import PartMap, Product, finish_map, map_tags
from lulc.runtime.options import GDAL_CACHE_MB, InferOptions, RunFigures, tile_geometry
from lulc.runtime.pipeline import block_runner, stream_blocks
from lulc.runtime.session import open_session
from lulc.runtime.tiling import TileGrid, make_grid

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

#: parts per worker: enough to balance uneven rows and to lose little to a dead worker...
PARTS_PER_WORKER = 2
#: ...but a part is at least this many block rows (where the raster has them for every
#: worker): each part recomputes one tile row above it as its halo, ~1/5 of a block row
MIN_PART_ROWS = 4
_ONE_AT_A_TIME = threading.Lock()
_SESSIONS: dict[tuple, tuple[Bundle, Any]] = {}


def local_workers(address: str) -> int | None:
    """Workers of a ``local`` / ``local:N`` address (None for a scheduler address)."""
    if address == "local":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise BackendUnavailable(f"--dask {address}: the number of local workers must be a positive integer")
        return n
    return None


@contextmanager
def dask_client(address: str) -> Iterator[Client]:
    """A client on a LocalCluster that lulc starts and closes, or on the user's scheduler."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BackendUnavailable("--dask needs Dask distributed: pip install 'lulc[dask]'") from None
    workers = local_workers(address)
    cluster = None
    try:
        if workers is not None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            cluster = LocalCluster(n_workers=workers, threads_per_worker=max(1, cores // workers), processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise BackendUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def part_rows(grid: TileGrid, workers: int) -> list[tuple[int, int]]:
    """Block-row ranges [r0, r1) of the parts: about ``PARTS_PER_WORKER`` per worker, none
    shorter than ``MIN_PART_ROWS`` unless a worker would be left without one."""
    rows = grid.shape[0]
    step = max(1, math.ceil(rows / (workers * PARTS_PER_WORKER)), min(MIN_PART_ROWS, math.ceil(rows / workers)))
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


def worker_threads() -> int:
    """The Dask threads of the worker this runs on: the task's whole CPU budget."""
    from distributed import get_worker

    return get_worker().state.nthreads


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """Run one lulc task at a time in this worker process, with all its threads (onnxruntime's
    callers), so workers that share a box never oversubscribe it."""
    with _ONE_AT_A_TIME:
        yield


def _worker_session(bundle_dir: str, opts: InferOptions) -> tuple[Bundle, Any]:
    """The bundle and its model session, opened once per worker process and bundle checksum."""
    bundle = Bundle.load(bundle_dir)
    key = (bundle_dir, bundle.fingerprint(), opts.backend, opts.device, opts.precision, opts.scene_stride,
           opts.ensemble, opts.tta)
    if key not in _SESSIONS:
        _SESSIONS[key] = (bundle, open_session(bundle, opts, worker_threads()))
    return _SESSIONS[key]


def classify_part(bundle_dir: str, source: str, part: str, rows: tuple[int, int], opts: InferOptions) -> dict:
    """Worker task: block rows [r0, r1) of ``source`` into the GeoTIFF ``part`` (skipped when it exists)."""
    part_path = Path(part)
    with one_at_a_time():
        bundle, session = _worker_session(bundle_dir, opts)
        tags = map_tags(bundle, session, opts.scene_stride)
        if _finished_part(part_path, tags):
            return {"tiles_run": 0, "tiles_skipped": 0, "reused": True, "session": None}
        m = bundle.manifest
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GTIFF_DIRECT_IO=True), \
                open_input(source, m.input, band_names=opts.band_names, normalization=m.normalization) as src:
            grid, runner = block_runner(bundle, session, src, opts, tile_geometry(bundle, opts, src.height, src.width))
            r0, r1 = rows
            first = grid.block(r0, 0)
            last = grid.block(r1 - 1, 0)
            runner.first_row = first.y0
            sink = PartMap(part_path, src, m.map_classes, opts.keeps_probabilities, opts.confidence, tags,
                           first.y0, last.y0 + last.owned_h, opts.uncertainty)
            sink.create()
            halo = r0 - (1 if r0 > 0 and grid.overlap else 0)
            blocks = [b for b in grid.blocks() if halo <= b.row < r1]
            try:
                with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer, tqdm(disable=True) as bar:
                    stream_blocks(runner, src, sink, blocks, reader, writer, None, bar, time.perf_counter())
                sink.finish()
            except BaseException:
                sink.discard()
                raise
    return {"tiles_run": runner.tiles_run, "tiles_skipped": runner.tiles_skipped, "reused": False,
            "session": (session.name, session.device, session.precision)}


def _finished_part(part: Path, tags: dict[str, str]) -> bool:
    """Whether ``part`` is a finished part made by the model and artefact this worker runs
    (a part of another precision or a replaced artefact is made again)."""
    if not part.exists():
        return False
    try:
        with rasterio.open(part) as done:
            if all(done.tags().get(k) == v for k, v in tags.items()):
                return True
    except (RasterioError, OSError):
        pass
    logger.info("%s was made by another model or precision; classifying it again", part)
    part.unlink(missing_ok=True)
    return False


def run_parts(bundle: Bundle, source: str | os.PathLike, publication: Publication, opts: InferOptions, key: dict,
              src: rasterio.io.DatasetReader, geometry: tuple[int, int]) -> RunFigures:
    """Classify ``source`` on the cluster at ``opts.dask`` and assemble the parts into the
    staged COG of ``publication``; returns the run's figures (tiles, backend, workers). The
    parts stay until the map is published, so a kill before that reuses them."""
    final = publication.final
    parts = temp_path(final, "parts")
    size, overlap = geometry
    grid = make_grid(src.height, src.width, size, overlap, opts.block_px)
    if overlap > grid.block_span:  # the halo of one block row would not hold a part's spill
        raise SettingError("--block-px", f"{opts.block_px} is smaller than the tile overlap {overlap}; use a larger one with --dask")
    assert opts.dask is not None  # the caller runs here only with --dask
    with dask_client(opts.dask) as client:
        _reuse_or_reset(parts, key)
        workers = max(1, len(client.scheduler_info()["workers"]))
        plan = part_rows(grid, workers)
        paths = [parts / f"rows-{r0:06d}-{r1:06d}.tif" for r0, r1 in plan]
        worker_opts = replace(opts, progress=False, quicklook=None, dask=None)
        futures = [client.submit(classify_part, str(bundle.root.resolve()), str(Path(source).resolve()), str(p), rows,
                                 worker_opts, key=f"lulc-part-{i}-{final.name}-{os.getpid()}", retries=3, pure=False)
                   for i, (rows, p) in enumerate(zip(plan, paths))]
        try:
            figures = _gather(client, futures, opts.progress)
        except BaseException as exc:
            kept = len([p for p in paths if p.exists()])
            if not kept:
                shutil.rmtree(parts, ignore_errors=True)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"interrupted; {kept} of {len(paths)} finished parts are kept in {parts}: "
                                  "rerun the same command to reuse them") from None
            raise
    figures.workers, figures.parts = workers, len(plan)
    if figures.tiles_run or figures.resumed:  # else all nodata: the caller says so
        product = opts.product(bundle)
        publication.work_files.append(parts)
        publication.need = 2 * sum(p.stat().st_size for p in paths if p.exists())
        assemble(publication, src, paths, [grid.block(r0, 0).y0 for r0, _ in plan], product)
    else:
        shutil.rmtree(parts, ignore_errors=True)
    return figures


def _reuse_or_reset(parts: Path, key: dict) -> None:
    """Keep the finished parts of an interrupted run of the same job; start afresh otherwise."""
    record = parts / "job.json"
    try:
        same = json.loads(record.read_text()) == key
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir()
        record.write_text(json.dumps(key))
    else:
        logger.info("reusing the finished parts in %s", parts)


def _gather(client: Client, futures: list, progress: bool) -> RunFigures:
    """Wait for the parts with one progress bar; Ctrl-C or a failed part cancels the rest."""
    from distributed import as_completed

    tiles_run = tiles_skipped = reused = 0
    sessions: set = set()
    try:
        with tqdm(total=len(futures), desc="Classifying parts", unit="part", disable=not progress) as bar:
            for future in as_completed(futures):
                done = future.result()
                tiles_run += done["tiles_run"]
                tiles_skipped += done["tiles_skipped"]
                reused += int(done["reused"])
                sessions.add(done["session"])
                bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    ran = sorted(s for s in sessions if s) or [("-", "-", "-")]
    return RunFigures(ran[0][0], f"dask: {', '.join(sorted({s[1] for s in ran}))}", ran[0][2], tiles_run, tiles_skipped,
                      reused > 0)


def assemble(publication: Publication, src: rasterio.io.DatasetReader, paths: list[Path], tops: list[int],
             product: Product) -> None:
    """Write the staged COG of ``publication`` straight from a VRT that stacks the parts (no copy)."""
    final = publication.final
    mosaic = temp_path(final, "parts.vrt")
    try:
        stack_rows(list(zip(paths, tops)), src.width, src.height, src.transform, mosaic)
        finish_map(mosaic, publication.staged("output"), final, product, publication.need)
    except (RasterioError, OSError) as exc:
        if isinstance(exc, LulcError):
            raise
        raise write_error(final, exc, publication.need) from exc
    finally:
        mosaic.unlink(missing_ok=True)
