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
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lulc.runtime import __version__
from lulc.runtime.bundle import SAMPLES, Bundle, now_iso
from lulc.runtime.errors import LulcError
from lulc.runtime.manifest import ClassInfo, Manifest, TileSpec
from lulc.training.config import TrainConfig, check_numbers
from lulc.training.data import SPLITS, TileSet, count_test_blocks
from lulc.training.labels import IGNORE
from lulc.training.outputs import check_bundle_output, publish, staged

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoint"
WORK = "work"
CURVES = "learning_curve.png"


def _infer_tiles(cfg: TrainConfig, task: str, divisor: int) -> TileSpec:
    """Runtime tiling. Scene models use tiles of whole cells and no overlap: one class per cell."""
    if task == "scene":
        size = max(divisor, cfg.infer_tile // divisor * divisor)
        return TileSpec(size=size, overlap=0, divisor=divisor)
    if cfg.infer_tile % divisor:
        raise LulcError(f"--infer-tile {cfg.infer_tile} must be a multiple of {divisor} for {cfg.arch}")
    if cfg.infer_overlap >= cfg.infer_tile:
        raise LulcError(f"--infer-overlap {cfg.infer_overlap} must be smaller than --infer-tile {cfg.infer_tile}")
    return TileSpec(size=cfg.infer_tile, overlap=cfg.infer_overlap, divisor=divisor)


def _deterministic(seed: int) -> None:
    """Same seed, same data, same machine -> same weights (op determinism costs a little speed)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def class_infos(classes: list[dict]) -> list[ClassInfo]:
    """The manifest's classes (ids 0..K-1); their label values go to ``provenance.label_values``."""
    return [ClassInfo(id=c["id"], name=c["name"], color=c["color"]) for c in classes]


def run_record(cfg, classes: list[dict], state: dict, metrics: dict, t0: float) -> dict:
    """Provenance shared by single-date and temporal bundles."""
    import keras

    return {
        "lulc_version": __version__, "created": now_iso(), "config": asdict(cfg),
        # the label raster's own value of each class (model id i <- value label_values[i])
        "label_values": [c["value"] for c in classes],
        "history": state["history"], "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"], "metrics": metrics, "train_seconds": round(time.time() - t0, 1),
        "keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
    }


def held_out_metrics(model, test: TileSet, names: list[str], task: str) -> dict:
    """Held-out metrics with the number of spatial blocks behind them (warns when few)."""
    from lulc.training.evaluate import evaluate_tiles

    metrics = evaluate_tiles(model, test, names, task)
    metrics.update(split="test", blocks=count_test_blocks(test))
    return metrics


def assemble(staging: Path, manifest: Manifest, model, test: TileSet, samples: int) -> Bundle:
    """Model, parity samples, metrics, confusion matrix and learning curves into the staged bundle."""
    from lulc.training.evaluate import write_evaluation
    from lulc.training.figures import learning_curve_figure

    model.save(staging / "model.keras")
    np.savez_compressed(staging / SAMPLES, x=test.x[:samples], y=test.y[:samples])
    bundle = Bundle(staging, manifest)
    bundle.save()
    bundle.add_artifact("keras", staging / "model.keras", "keras")
    bundle.add_artifact("samples", staging / SAMPLES, "npz", details={"split": "test", "tiles": int(min(samples, len(test)))})
    prov = manifest.provenance
    write_evaluation(prov["metrics"]["test"], staging, bundle)
    learning_curve_figure(prov["history"], staging / f".tmp.{CURVES}", prov.get("best_epoch"))
    bundle.add_artifact("learning_curve", staging / f".tmp.{CURVES}", "png", dest=CURVES)
    for scratch in (CHECKPOINTS, WORK):
        shutil.rmtree(staging / scratch, ignore_errors=True)
    return bundle


def write_bundle(cfg, config_record: dict | None, build: Callable[[Path], None],
                 resumable: Callable[[Path], bool] = lambda staging: False) -> Bundle:
    """Check the settings and the output, let ``build`` fill the staging folder, publish it."""
    check_numbers(cfg)
    resume = getattr(cfg, "resume", False)
    output = check_bundle_output(cfg.output, [*cfg.inputs, (config_record or {}).get("file")], cfg.overwrite, resume)
    with staged(output, cfg.overwrite, resume, resumable) as staging:
        build(staging)
        publish(staging, output)
    return Bundle.load(output)


def train(cfg: TrainConfig, config_record: dict | None = None) -> Bundle:
    """Run training and write a complete, evaluated model bundle to ``cfg.output``."""
    from lulc.training.fit import has_checkpoint

    return write_bundle(cfg, config_record, lambda staging: _train_into(cfg, config_record, staging),
                        lambda staging: has_checkpoint(staging / CHECKPOINTS))


def _train_into(cfg: TrainConfig, config_record: dict | None, staging: Path) -> None:
    from lulc.training.batchnorm import calibration_sample
    from lulc.training.class_weights import resolve_class_weights
    from lulc.training.data import normalize
    from lulc.training.dataset import make_dataset
    from lulc.training.fit import fit
    from lulc.training.inputs import prepare_samples
    from lulc.training.models import build_model, task_of

    t0 = time.time()
    (staging / WORK).mkdir(exist_ok=True)
    samples = prepare_samples(cfg, staging / WORK)
    task, tiles, classes, norm = task_of(cfg.arch), samples.tiles, samples.classes, samples.norm
    names = [c["name"] for c in classes]
    tiles.x = normalize(tiles.x, tiles.valid, norm)
    logger.info("samples per split: %s", tiles.split_record["tiles"])

    _deterministic(cfg.seed)
    try:
        model = build_model(cfg.arch, len(samples.spec.channels), len(classes), depth=cfg.depth, width=cfg.width,
                            patch=cfg.tile, bands=samples.spec.channels, weights=cfg.weights,
                            freeze_backbone=cfg.freeze_backbone, **cfg.model_options)
    except ValueError as exc:
        raise LulcError(f"cannot build {cfg.arch}: {exc}") from None
    divisor = getattr(model, "divisor", 1)
    if cfg.tile % divisor:
        raise LulcError(f"--tile {cfg.tile} must be a multiple of {divisor} for {cfg.arch} (depth {cfg.depth})")
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
    provenance = run_record(cfg, classes, state, {"test": held_out_metrics(model, test, names, task)}, t0)
    provenance.update(config_sources=config_record or {"file": None}, data=samples.data, split=tiles.split_record,
                      class_weights=None if weights is None else [round(float(w), 5) for w in weights])
    manifest = Manifest(task=task, architecture=cfg.arch, input=samples.spec, normalization=norm, tile=tile_spec,
                        classes=class_infos(classes), ignore_index=IGNORE, provenance=provenance)
    assemble(staging, manifest, model, test, 16)


__all__ = ["SPLITS", "TrainConfig", "train"]
