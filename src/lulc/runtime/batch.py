"""``lulc batch BUNDLE INPUT... -o OUTDIR``: one class map per raster, glob or STAC item.

A STAC Item (or ItemCollection) names its bands as asset keys or ``eo:bands`` names; the
assets matching the bundle's band names are stacked in the bundle's order in a VRT (no
pixel copy) and classified like any raster, so a catalogue search result is a batch job
as it stands (:mod:`lulc.runtime.io.stac`: where a file names its own bands, those names
win over the item's). Maps go to ``OUTDIR/<input stem>.tif`` or ``OUTDIR/<item id>.tif``; a
map already there from the same model is kept (a rerun resumes the batch). With ``--dask``
each map is one task on the cluster; without, they run one after another here.

One broken input does not stop the others: every map that can be made is made, each failure
is one line, and the batch tells how many of its maps exist at the end.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import rasterio
from tqdm.auto import tqdm

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import InputRasterError, LulcError, OutputError
from lulc.runtime.infer import RunSummary, run_inference
from lulc.runtime.io.bandstack import write_band_stack
from lulc.runtime.io.mapformat import band_layout
from lulc.runtime.io.outputs import temp_path
from lulc.runtime.io.stac import StacStack, check_files, is_url, item_id, item_stack, items, read_json
from lulc.runtime.io.writer import identity_tags
from lulc.runtime.options import InferOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One map to make: its name (the output's stem) and the rasters stacked in band order."""

    name: str
    inputs: tuple[str, ...]
    #: a STAC item's stack, whose files are checked against the item before they run
    stac: StacStack | None = None


@dataclass
class BatchResult:
    """What a batch made: the maps in OUTDIR (written or kept) and one line per failed input."""

    maps: list[str] = field(default_factory=list)
    kept: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.maps) + len(self.failures)


def expand_inputs(inputs: list[str], bands: list[str]) -> tuple[list[Job], list[str]]:
    """Rasters, globs and STAC Item / ItemCollection JSON (files or URLs) -> jobs, and one line
    for each input or item that cannot become a job (it fails alone)."""
    jobs: list[Job] = []
    failures: list[str] = []
    for given in inputs:
        try:
            if given.lower().endswith(".json") or is_url(given):
                for n, item in enumerate(items(read_json(given), given)):
                    try:
                        stack = item_stack(item, given, bands)
                        jobs.append(Job(stack.item_id, stack.hrefs, stack))
                    except LulcError as exc:
                        failures.append(_failure(_item_label(item, given, n), exc))
            elif glob.has_magic(given):
                matches = sorted(glob.glob(given))
                if not matches:
                    raise InputRasterError(f"no file matches {given}")
                jobs += [Job(Path(m).stem, (m,)) for m in matches]
            else:
                jobs.append(Job(Path(given).stem, (given,)))
        except LulcError as exc:
            failures.append(_failure(given, exc))
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputRasterError(f"several inputs would write the same map ({', '.join(twice)}.tif); rename them "
                               "or run them as separate batches")
    return jobs, failures


def _item_label(item: dict, source: str, n: int) -> str:
    try:
        return item_id(item, source)
    except LulcError:
        return f"{source} item {n + 1}"


def _failure(what: str, exc: BaseException) -> str:
    """One line for an input that gave no map."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if what in text else f"{what}: {text}"


def finished(path: Path, bundle: Bundle, opts: InferOptions) -> bool:
    """Whether ``path`` is a complete map of this model with the bands this run asks for (and
    the class cell, for a scene model): kept when a batch is rerun."""
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
            bands = band_layout(bundle.manifest.map_classes, opts.probabilities, opts.confidence, opts.uncertainty)
            return (list(src.descriptions) == bands
                    and all(tags.get(k) == v for k, v in identity_tags(bundle, opts.scene_stride).items()))
    except (rasterio.errors.RasterioError, OSError):
        return False


def run_job(bundle_dir: str, job: Job, output: str, opts: InferOptions) -> RunSummary:
    """One map (in this process, or as a Dask task on a worker)."""
    if opts.dask is None and _on_dask_worker():
        from lulc.runtime.distributed import one_at_a_time, worker_threads

        with one_at_a_time():
            return _run_job(bundle_dir, job, output, replace(opts, cores=worker_threads()))
    return _run_job(bundle_dir, job, output, opts)


def _run_job(bundle_dir: str, job: Job, output: str, opts: InferOptions) -> RunSummary:
    """A STAC stack is checked against its item first, then stacked under the bands' names
    in a hidden VRT beside the map (removed afterwards)."""
    if job.stac is None:
        return run_inference(bundle_dir, list(job.inputs), output, opts)
    names = check_files(job.stac, opts.band_names)
    if len(job.inputs) == 1:
        return run_inference(bundle_dir, job.inputs[0], output, opts)
    stacked = temp_path(Path(output), "stac.vrt")
    try:
        return run_inference(bundle_dir, write_band_stack(job.inputs, stacked, names), output, opts)
    finally:
        stacked.unlink(missing_ok=True)


def _on_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def run_batch(bundle_dir: str | os.PathLike, inputs: list[str], outdir: str | os.PathLike, opts: InferOptions) -> BatchResult:
    """Classify every input into ``outdir`` that can be classified; the result lists the maps
    written or kept (in input order) and a line for each input that failed. A folder this
    batch created is removed again when no map went into it."""
    bundle = Bundle.load(bundle_dir)
    jobs, failures = expand_inputs(inputs, bundle.manifest.input.bands)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {out} exists and is not a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]  # the folders this batch may create
    result = BatchResult(failures=failures)
    todo = []
    try:
        if jobs:
            out.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            target = out / f"{job.name}.tif"
            if target.exists() and not opts.overwrite and finished(target, bundle, opts):
                logger.info("%s is already done; kept", target)
                result.kept += 1
                continue
            todo.append((job, target))
        each = replace(opts, progress=False, quicklook=None)
        if opts.dask:
            done = _on_cluster(str(bundle.root.resolve()), todo, replace(each, dask=None), opts.dask, opts.progress)
        else:
            done = {}
            for job, target in tqdm(todo, desc="Classifying maps", unit="map", disable=not opts.progress):
                try:
                    run_job(str(bundle.root), job, str(target), each)
                    done[job.name] = None
                except LulcError as exc:
                    done[job.name] = _failure(job.name, exc)
    finally:
        for folder in created:  # innermost first, while they are empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    for job in jobs:  # a kept map is not in ``done``: it counts as made
        failure = done.get(job.name)
        if failure:
            result.failures.append(failure)
        else:
            result.maps.append(str(out / f"{job.name}.tif"))
    return result


def _on_cluster(bundle_dir: str, todo: list[tuple[Job, Path]], opts: InferOptions, address: str,
                progress: bool) -> dict[str, str | None]:
    """One task per map; one progress bar fed from the scheduler; Ctrl-C cancels the rest.
    Returns each map's failure line (None: written); a failed map does not stop the others."""
    from distributed import as_completed

    from lulc.runtime.distributed import dask_client

    done: dict[str, str | None] = {}
    with dask_client(address) as client:
        futures = {client.submit(run_job, bundle_dir, job, str(target.resolve()), opts,
                                 key=f"lulc-map-{job.name}-{os.getpid()}", retries=3, pure=False): job.name
                   for job, target in todo}
        try:
            with tqdm(total=len(futures), desc="Classifying maps", unit="map", disable=not progress) as bar:
                for future in as_completed(futures):
                    try:
                        future.result()
                        done[futures[future]] = None
                    except Exception as exc:  # noqa: BLE001 (a lost worker or a map's own error: that map failed)
                        done[futures[future]] = _failure(futures[future], exc)
                    bar.update(1)
        except BaseException:
            client.cancel(list(futures))
            raise
    return done
