"""A training run: samples -> Keras model -> evaluated model bundle.

The bundle is assembled in a staging folder ``.NAME.partial`` and renamed into place at the
end, so an interrupted run never leaves a half-written bundle at the output path; the
staging folder keeps the per-epoch checkpoint that ``--resume`` continues from.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lulc.runtime import __version__
from lulc.runtime.bundle import SAMPLES, Bundle, now_iso
from lulc.runtime.errors import LulcError
from lulc.runtime.manifest import ClassInfo, Manifest, TileSpec
from lulc.training.config import TrainConfig
from lulc.training.data import SPLITS
from lulc.training.labels import IGNORE

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoint"
WORK = "work"


def _stage(output: Path, overwrite: bool, resume: bool) -> Path:
    """The staging folder; a leftover checkpoint is only reused with --resume, only dropped with --overwrite."""
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise LulcError(f"bundle folder {output} already exists and is not empty (use --overwrite)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LulcError(f"cannot create {output}: {exc.strerror}") from None
    staging = output.with_name(f".{output.name}.partial")
    if not resume:
        if (staging / CHECKPOINTS).exists() and not overwrite:
            raise LulcError(f"an interrupted run left a checkpoint in {staging}: continue it with --resume, "
                            "or start over with --overwrite")
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    return staging


def _infer_tiles(cfg: TrainConfig, task: str, divisor: int) -> TileSpec:
    """Runtime tiling. Scene models use tiles of whole cells and no overlap: one class per cell."""
    if task == "scene":
        size = max(divisor, cfg.infer_tile // divisor * divisor)
        return TileSpec(size=size, overlap=0, divisor=divisor)
    if cfg.infer_tile % divisor:
        raise LulcError(f"--infer-tile {cfg.infer_tile} must be a multiple of {divisor} for {cfg.arch}")
    return TileSpec(size=cfg.infer_tile, overlap=cfg.infer_overlap, divisor=divisor)


def _deterministic(seed: int) -> None:
    """Same seed, same data, same machine -> same weights (op determinism costs a little speed)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(cfg: TrainConfig, config_record: dict | None = None) -> Bundle:
    """Run training and write a complete, evaluated model bundle to ``cfg.output``."""
    import keras

    from lulc.training.class_weights import resolve_class_weights
    from lulc.training.data import normalize
    from lulc.training.dataset import make_dataset
    from lulc.training.evaluate import evaluate_tiles, write_evaluation
    from lulc.training.fit import fit
    from lulc.training.inputs import prepare_samples
    from lulc.training.models import build_model, task_of

    if not cfg.output:
        raise LulcError("no output bundle folder given (-o)")
    output = Path(cfg.output)
    staging = _stage(output, cfg.overwrite, cfg.resume)
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
    weights = resolve_class_weights(cfg.class_weights, tiles.part("train"), names)
    train_ds = make_dataset(tiles.part("train"), cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed,
                            class_weights=weights, brightness=cfg.brightness, norm=norm)
    val_ds = make_dataset(tiles.part("val"), cfg.batch_size, class_weights=weights)
    model, state = fit(model, train_ds, val_ds, cfg.epochs, cfg.learning_rate, staging / CHECKPOINTS,
                       staging / "logs", cfg.fingerprint(), cfg.patience, cfg.resume)

    test = tiles.part("test")
    metrics = evaluate_tiles(model, test, names, task)
    metrics["split"] = "test"
    model.save(staging / "model.keras")
    np.savez_compressed(staging / SAMPLES, x=test.x[:16], y=test.y[:16])

    manifest = Manifest(
        task=task, architecture=cfg.arch, input=samples.spec, normalization=norm, tile=tile_spec,
        classes=[ClassInfo(**c) for c in classes], ignore_index=IGNORE,
        provenance={
            "lulc_version": __version__, "created": now_iso(), "config": asdict(cfg),
            "config_sources": config_record or {"file": None}, "data": samples.data,
            "split": tiles.split_record, "history": state["history"],
            "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "stopped_early": state["stopped_early"],
            "class_weights": None if weights is None else [round(float(w), 5) for w in weights],
            "metrics": {"test": metrics}, "train_seconds": round(time.time() - t0, 1),
            "keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
        },
    )
    bundle = Bundle(staging, manifest)
    bundle.save()
    bundle.add_artifact("keras", staging / "model.keras", "keras")
    bundle.add_artifact("samples", staging / SAMPLES, "npz", details={"split": "test", "tiles": int(min(16, len(test)))})
    write_evaluation(metrics, staging, bundle)
    for scratch in (CHECKPOINTS, WORK):
        shutil.rmtree(staging / scratch, ignore_errors=True)
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    return Bundle.load(output)


__all__ = ["SPLITS", "TrainConfig", "train"]
