"""A training run: samples -> Keras model -> evaluated model bundle.

The output folder is checked before any work (:mod:`lulc.training.outputs`): it may not be
or hold an input, and ``--overwrite`` replaces only a lulc bundle. The bundle is assembled
in a staging folder ``.NAME.partial`` and renamed into place at the end, so an interrupted
run never leaves a half-written bundle at the output path; the staging folder keeps the
per-epoch checkpoint that ``--resume`` continues from, and is removed when a run fails
before it has one.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError
from lulc.runtime.core.manifest import TileSpec
from lulc.training.bundle_writer import (
    CHECKPOINTS,
    WORK,
    deterministic,
    finish_bundle,
    held_out_metrics,
    runtime_tiles,
    start_run,
    write_bundle,
)
from lulc.training.class_weights import resolve_class_weights
from lulc.training.config import TrainConfig, require_multiple
from lulc.training.data import SPLITS, normalize
from lulc.training.inputs import prepare_samples
from lulc.training.models import accepted_options, build_model, task_of

logger = logging.getLogger(__name__)


def _infer_tiles(cfg: TrainConfig, task: str, divisor: int) -> TileSpec:
    """Runtime tiling. Scene models use tiles of whole cells and no overlap: one class per cell."""
    if task == "scene":
        size = max(divisor, cfg.infer_tile // divisor * divisor)
        return TileSpec(size=size, overlap=0, divisor=divisor)
    return runtime_tiles(cfg, divisor, cfg.infer_overlap)


def train(cfg: TrainConfig, config_record: dict | None = None) -> Bundle:
    """Run training and write a complete, evaluated model bundle to ``cfg.output``."""
    from lulc.training.fit import has_checkpoint

    return write_bundle(cfg, config_record, lambda staging: _train_into(cfg, config_record, staging),
                        lambda staging: has_checkpoint(staging / CHECKPOINTS))


def _train_into(cfg: TrainConfig, config_record: dict | None, staging: Path) -> None:
    # the modules that load Keras are imported here, when a run starts: `lulc --help` stays fast
    from lulc.training.batchnorm import calibration_sample
    from lulc.training.dataset import make_dataset
    from lulc.training.fit import fit

    t0 = start_run(staging)
    samples = prepare_samples(cfg, staging / WORK)
    task, tiles, classes, norm = task_of(cfg.arch), samples.tiles, samples.classes, samples.norm
    names = [c["name"] for c in classes]
    tiles.x = normalize(tiles.x, tiles.valid, norm)
    logger.info("samples per split: %s", tiles.split_record["tiles"])

    deterministic(cfg.seed)
    # run-wide settings go to the builders that read them (scene-vgg16 has no depth); the
    # model_options are the user's own, so build_model refuses one its builder does not take
    shared = {"depth": cfg.depth, "width": cfg.width, "patch": cfg.tile, "bands": samples.spec.channels,
              "weights": cfg.weights, "freeze_backbone": cfg.freeze_backbone}
    options = {k: v for k, v in shared.items() if k in accepted_options(cfg.arch)}
    try:
        model = build_model(cfg.arch, len(samples.spec.channels), len(classes), **{**options, **cfg.model_options})
    except ValueError as exc:
        raise LulcError(f"cannot build {cfg.arch}: {exc}") from None
    divisor = getattr(model, "divisor", 1)
    require_multiple(cfg, "tile", divisor, f"{cfg.arch} (depth {cfg.depth})")
    tile_spec = _infer_tiles(cfg, task, divisor)
    train_tiles = tiles.part("train")
    weights = resolve_class_weights(cfg.class_weights, train_tiles, names)
    train_ds = make_dataset(train_tiles, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed,
                            class_weights=weights, brightness=cfg.brightness, norm=norm)
    val_ds = make_dataset(tiles.part("val"), cfg.batch_size, class_weights=weights)
    model, state = fit(model, train_ds, val_ds, cfg.epochs, cfg.learning_rate, staging / CHECKPOINTS,
                       staging / "logs", cfg.fingerprint(), cfg.patience, cfg.resume,
                       calibration_sample(train_tiles.x, cfg.seed), cfg.batch_size)

    test = tiles.part("test")
    finish_bundle(staging, cfg, config_record, model=model, test=test, samples=16, classes=classes, state=state,
                  metrics={"test": held_out_metrics(model, test, names, task)}, t0=t0, task=task,
                  input_spec=samples.spec, normalization=norm, tile=tile_spec, data=samples.data,
                  split=tiles.split_record,
                  class_weights=None if weights is None else [round(float(w), 5) for w in weights])


__all__ = ["SPLITS", "TrainConfig", "train"]
