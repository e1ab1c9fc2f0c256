"""``lulc batch BUNDLE INPUT... -o OUTDIR``: one class map per raster, glob or STAC item.

A STAC Item (or ItemCollection) names its bands as asset keys or ``eo:bands`` names; the
assets matching the bundle's band names are stacked in the bundle's order in a VRT (no
pixel copy) and classified like any raster, so a catalogue search result is a batch job
as it stands. Maps go to ``OUTDIR/<input stem>.tif`` or ``OUTDIR/<item id>.tif``; a map
already there from the same model is kept (a rerun resumes the batch). With ``--dask``
each map is one task on the cluster; without, they run one after another here.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import rasterio
from tqdm.auto import tqdm

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import InputRasterError, OutputError
from lulc.runtime.infer import InferOptions, RunSummary, run_inference
from lulc.runtime.io.mapformat import band_layout
from lulc.runtime.io.writer import identity_tags

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One map to make: its name (the output's stem) and the rasters stacked in band order."""

    name: str
    inputs: tuple[str, ...]
    #: STAC stacks are matched by asset name, so the files' own band names are not checked
    band_names: str | None = None


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in ("http", "https")


def _read_json(source: str) -> dict:
    try:
        if _is_url(source):
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 (user-given http(s) URL)
                return json.loads(response.read())
        return json.loads(Path(source).read_text())
    except (OSError, ValueError) as exc:
        raise InputRasterError(f"cannot read STAC JSON {source}: {exc}") from None


def _href(item_source: str, href: str) -> str:
    """An asset's href as GDAL opens it: relative to the item, http(s) through /vsicurl/."""
    if _is_url(href) or _is_url(item_source):
        url = urljoin(item_source, href)
        return f"/vsicurl/{url}" if _is_url(url) else url
    return href if os.path.isabs(href) else str(Path(item_source).resolve().parent / href)


def _asset_bands(asset: dict) -> list[str]:
    """Band names an asset declares (STAC 1.0 ``eo:bands`` or 1.1 ``bands``)."""
    declared = asset.get("eo:bands") or asset.get("bands") or []
    return [str(b.get("name") or b.get("common_name") or "").lower() for b in declared if isinstance(b, dict)]


def stac_job(item: dict, source: str, bands: list[str]) -> Job:
    """The stack of ``item``'s assets in the bundle's band order (one asset holding all the
    bands in order is used as it is); a missing band is a one-line error naming it."""
    item_id = str(item.get("id") or "").strip()
    if not item_id or "/" in item_id or item_id.startswith("."):
        raise InputRasterError(f"STAC item in {source} has no usable id (got {item_id!r})")
    assets = {k: a for k, a in (item.get("assets") or {}).items() if isinstance(a, dict) and a.get("href")}
    wanted = [b.lower() for b in bands]
    for asset in assets.values():
        if _asset_bands(asset) == wanted:
            return Job(item_id, (_href(source, asset["href"]),), "ignore")
    hrefs = []
    for band in wanted:
        match = [a for k, a in assets.items() if k.lower() == band or _asset_bands(a) == [band]]
        if not match:
            raise InputRasterError(f"STAC item {item_id} has no asset for band {band} "
                                   f"(assets: {', '.join(assets) or 'none'}); the model needs {', '.join(bands)}")
        hrefs.append(_href(source, match[0]["href"]))
    return Job(item_id, tuple(hrefs), "ignore")


def expand_inputs(inputs: list[str], bands: list[str]) -> list[Job]:
    """Rasters, globs and STAC Item / ItemCollection JSON (files or URLs) -> jobs."""
    jobs: list[Job] = []
    for given in inputs:
        if given.lower().endswith(".json") or _is_url(given):
            doc = _read_json(given)
            items = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
            if not items or not all(isinstance(i, dict) and i.get("type") == "Feature" for i in items):
                raise InputRasterError(f"{given} is not a STAC Item or ItemCollection")
            jobs += [stac_job(item, given, bands) for item in items]
        elif glob.has_magic(given):
            matches = sorted(glob.glob(given))
            if not matches:
                raise InputRasterError(f"no file matches {given}")
            jobs += [Job(Path(m).stem, (m,)) for m in matches]
        else:
            jobs.append(Job(Path(given).stem, (given,)))
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputRasterError(f"several inputs would write the same map ({', '.join(twice)}.tif); rename them "
                               "or run them as separate batches")
    return jobs


def finished(path: Path, bundle: Bundle, opts: InferOptions) -> bool:
    """Whether ``path`` is a complete map of this model with the bands this run asks for (and
    the class cell, for a scene model): kept when a batch is rerun."""
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
            bands = band_layout(bundle.manifest.map_classes, opts.probabilities, opts.confidence)
            return (list(src.descriptions) == bands
                    and all(tags.get(k) == v for k, v in identity_tags(bundle, opts.scene_stride).items()))
    except (rasterio.errors.RasterioError, OSError):
        return False


def run_job(bundle_dir: str, job: Job, output: str, opts: InferOptions) -> RunSummary:
    """One map (in this process, or as a Dask task on a worker)."""
    if opts.dask is None and _on_dask_worker():
        from lulc.runtime.distributed import one_at_a_time, worker_threads

        with one_at_a_time():
            return run_inference(bundle_dir, list(job.inputs), output, replace(opts, cores=worker_threads()))
    return run_inference(bundle_dir, list(job.inputs), output, opts)


def _on_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def run_batch(bundle_dir: str | os.PathLike, inputs: list[str], outdir: str | os.PathLike, opts: InferOptions) -> list[str]:
    """Classify every input into ``outdir``; returns the maps written (or kept) in input order."""
    bundle = Bundle.load(bundle_dir)
    jobs = expand_inputs(inputs, bundle.manifest.input.bands)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for job in jobs:
        target = out / f"{job.name}.tif"
        if target.exists() and not opts.overwrite and finished(target, bundle, opts):
            logger.info("%s is already done; kept", target)
            continue
        todo.append((job, target))
    each = replace(opts, progress=False, quicklook=None)
    if opts.dask:
        _on_cluster(str(bundle.root.resolve()), todo, replace(each, dask=None), opts.dask, opts.progress)
    else:
        for job, target in tqdm(todo, desc="Classifying maps", unit="map", disable=not opts.progress):
            run_job(str(bundle.root), job, str(target), replace(each, band_names=job.band_names or opts.band_names))
    return [str(out / f"{job.name}.tif") for job in jobs]


def _on_cluster(bundle_dir: str, todo: list[tuple[Job, Path]], opts: InferOptions, address: str, progress: bool) -> None:
    """One task per map; one progress bar fed from the scheduler; Ctrl-C cancels the rest."""
    from distributed import as_completed

    from lulc.runtime.distributed import dask_client

    with dask_client(address) as client:
        futures = [client.submit(run_job, bundle_dir, job, str(target.resolve()),
                                 replace(opts, band_names=job.band_names or opts.band_names),
                                 key=f"lulc-map-{job.name}-{os.getpid()}", retries=3, pure=False)
                   for job, target in todo]
        try:
            with tqdm(total=len(futures), desc="Classifying maps", unit="map", disable=not progress) as bar:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
