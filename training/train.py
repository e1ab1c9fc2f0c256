"""A training run: labels + image -> tiles -> Keras model -> evaluated model bundle.

The bundle is assembled in a staging folder and renamed into place at the end, so an
interrupted run never leaves a half-written bundle at the output path.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lulc.runtime import __version__
from lulc.runtime.bundle import SAMPLES, Bundle, now_iso
from lulc.runtime.errors import LulcError
from lulc.runtime.manifest import ClassInfo, InputSpec, Manifest, TileSpec
from lulc.training.data import SPLITS, TileSet, channel_stats, extract_tiles, normalize
from lulc.training.labels import IGNORE, is_vector, label_classes, rasterize_vector
from lulc.training.metrics import confusion_matrix, report

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    image: str
    labels: str
    output: str
    arch: str = "unet"
    label_column: str = "class"
    classes: str | None = None
    epochs: int = 10
    tile: int = 64
    stride: int | None = None
    split_block: int | None = None
    seed: int = 0
    batch_size: int = 16
    learning_rate: float = 1e-3
    depth: int = 3
    width: int = 16
    infer_tile: int = 256
    infer_overlap: int = 32
    overwrite: bool = False
    model_options: dict = field(default_factory=dict)


def _stage(output: Path, overwrite: bool) -> Path:
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise LulcError(f"bundle folder {output} already exists and is not empty (use --overwrite)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LulcError(f"cannot create {output}: {exc.strerror}") from None
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _resolve_labels(cfg: TrainConfig, staging: Path) -> tuple[Path, list[dict]]:
    if is_vector(cfg.labels):
        names = None
        if cfg.classes:
            names = [c["name"] for c in label_classes(cfg.labels, cfg.classes)]
        raster = staging / "labels.tif"
        names = rasterize_vector(cfg.labels, cfg.image, raster, column=cfg.label_column, class_names=names)
        classes = label_classes(raster, cfg.classes) if cfg.classes else label_classes(raster)
        return raster, classes
    return Path(cfg.labels), label_classes(cfg.labels, cfg.classes)


def _check_inputs(cfg: TrainConfig) -> None:
    for name in ("image", "labels"):
        if not Path(getattr(cfg, name)).exists():
            raise LulcError(f"--{name} {getattr(cfg, name)} not found")


def _band_names(image: str) -> tuple[list[str], str, float | None]:
    import rasterio

    with rasterio.open(image) as src:
        names = [d or f"band{i}" for i, d in enumerate(src.descriptions, start=1)]
        return names, src.dtypes[0], src.nodata


def _fit(model, train: TileSet, val: TileSet, cfg: TrainConfig, staging: Path):
    import keras

    from lulc.training.dataset import make_dataset

    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(), weighted_metrics=["accuracy"])
    verbose = 1 if sys.stderr.isatty() else 2
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(staging / "logs"), write_graph=False)]
    history = model.fit(
        make_dataset(train, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed),
        validation_data=make_dataset(val, cfg.batch_size),
        epochs=cfg.epochs, verbose=verbose, shuffle=False, callbacks=callbacks,
    )
    return {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()}


def predict_classes(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1).astype(np.uint8)


def train(cfg: TrainConfig) -> Bundle:
    """Run training and write a complete, evaluated model bundle to ``cfg.output``."""
    import keras

    from lulc.training.models import ARCHITECTURES, get_builder

    _check_inputs(cfg)
    if cfg.arch not in ARCHITECTURES:
        raise LulcError(f"unknown --arch {cfg.arch}; choose one of {', '.join(ARCHITECTURES)}")
    output = Path(cfg.output)
    staging = _stage(output, cfg.overwrite)
    t0 = time.time()
    labels, classes = _resolve_labels(cfg, staging)
    bands, dtype, nodata = _band_names(cfg.image)
    tiles = extract_tiles(cfg.image, labels, cfg.tile, cfg.stride or cfg.tile // 2,
                          cfg.split_block or 2 * cfg.tile, cfg.seed, ignore=IGNORE)
    present = np.unique(tiles.y[tiles.y != IGNORE])
    if present.size and present.max() >= len(classes):
        raise LulcError(f"label value {present.max()} has no entry in the class list of {len(classes)} classes")
    train_set = tiles.part("train")
    norm = channel_stats(train_set.x, train_set.valid)
    tiles.x = normalize(tiles.x, tiles.valid, norm)
    logger.info("tiles per split: %s", tiles.split_record["tiles"])

    keras.utils.set_random_seed(cfg.seed)
    model = get_builder(cfg.arch)(len(bands), len(classes), depth=cfg.depth, width=cfg.width, **cfg.model_options)
    divisor = getattr(model, "divisor", 1)
    if cfg.tile % divisor or cfg.infer_tile % divisor:
        raise LulcError(f"--tile must be a multiple of {divisor} for {cfg.arch} depth {cfg.depth}")
    history = _fit(model, tiles.part("train"), tiles.part("val"), cfg, staging)

    test = tiles.part("test")
    pred = predict_classes(model, test.x)
    metrics = report(confusion_matrix(test.y, pred, len(classes), IGNORE), [c["name"] for c in classes])
    model.save(staging / "model.keras")
    np.savez_compressed(staging / SAMPLES, x=test.x[:16], y=test.y[:16])

    manifest = Manifest(
        task="segmentation", architecture=cfg.arch,
        input=InputSpec(bands=bands, dtype=dtype, nodata=nodata),
        normalization=norm,
        tile=TileSpec(size=cfg.infer_tile, overlap=cfg.infer_overlap, divisor=divisor),
        classes=[ClassInfo(**c) for c in classes], ignore_index=IGNORE,
        provenance={
            "lulc_version": __version__, "created": now_iso(), "config": asdict(cfg),
            "data": {"image": str(Path(cfg.image).resolve()), "labels": str(Path(cfg.labels).resolve())},
            "split": tiles.split_record, "history": history, "metrics": {"test": metrics},
            "train_seconds": round(time.time() - t0, 1), "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
        },
    )
    bundle = Bundle(staging, manifest)
    bundle.save()
    bundle.add_artifact("keras", staging / "model.keras", "keras")
    bundle.add_artifact("samples", staging / SAMPLES, "npz", details={"split": "test", "tiles": int(min(16, len(test)))})
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    return Bundle.load(output)


__all__ = ["SPLITS", "TrainConfig", "train"]
