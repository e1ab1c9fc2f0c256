"""From the settings to labelled samples: raster stack + labels, or a EuroSAT-style folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lulc.runtime.core.errors import SettingError
from lulc.runtime.core.manifest import InputSpec, Normalization
from lulc.training.config import TrainConfig
from lulc.training.data import SampleSpec, TileSet, extract_tiles
from lulc.training.eurosat import load_folder
from lulc.training.labels import IGNORE, prepare_labels
from lulc.training.models import ARCHITECTURES, task_of
from lulc.training.sources import RasterStack, open_raster


@dataclass
class Samples:
    tiles: TileSet  # raw values; normalise with ``norm``
    norm: Normalization  # training-split statistics
    spec: InputSpec
    classes: list[dict]
    data: dict  # provenance: where the samples came from


def sample_spec(cfg: TrainConfig, task: str) -> SampleSpec:
    # a scene patch needs a clear majority; a segmentation tile only some labelled pixels
    min_labeled = cfg.min_labeled if cfg.min_labeled is not None else (0.5 if task == "scene" else 0.05)
    return SampleSpec(tile=cfg.tile, stride=cfg.stride or max(1, cfg.tile // 2), split_block=cfg.split_block or 2 * cfg.tile,
                      seed=cfg.seed, task=task, rule=cfg.patch_rule, min_labeled=min_labeled, ignore=IGNORE)


def prepare_samples(cfg: TrainConfig, work: Path, known: list[dict] | None = None) -> Samples:
    """Samples for ``cfg``; intermediate rasters (rasterized labels) go to ``work``.

    ``known``: a bundle's classes (with their label values) to read the labels with, so an
    evaluation counts the same classes the model was trained on.
    """
    if cfg.arch not in ARCHITECTURES:
        raise SettingError("--arch", f"{cfg.arch} is unknown; choose one of {', '.join(ARCHITECTURES)}")
    task = task_of(cfg.arch)
    if task not in ("segmentation", "scene"):
        raise SettingError(None, f"{cfg.arch} is a temporal model: give it a time-series --stack, not --image")
    if cfg.data:

        if task != "scene":
            raise SettingError(None, f"--data folders hold scene patches; use a scene-* --arch, not {cfg.arch}")
        tiles, norm, spec, classes = load_folder(cfg.data, cfg.seed, cfg.indices)
        return Samples(tiles, norm, spec, classes, {"folder": str(Path(cfg.data).resolve())})
    if not cfg.images or not cfg.labels:
        raise SettingError(None, "give --image and --labels (raster or vector), or --data DIR of class folders")
    with RasterStack(cfg.images, cfg.align, cfg.indices) as stack:
        labels, classes = prepare_labels(cfg.labels, stack, work, cfg.label_column, cfg.classes, cfg.aoi, cfg.align,
                                         known)
        with open_raster(labels, "label raster") as lab:
            tiles, norm = extract_tiles(stack, lab, sample_spec(cfg, task))
        spec = InputSpec(bands=stack.bands, dtype=stack.dtype, nodata=stack.nodata, derived=stack.derived)
        data = {"image": stack.paths, "nodata": stack.nodatas, "bands_per_image": stack.band_counts,
                "labels": str(Path(cfg.labels).resolve()), "aoi": str(Path(cfg.aoi).resolve()) if cfg.aoi else None}
    return Samples(tiles, norm, spec, classes, data)
