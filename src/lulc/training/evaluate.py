"""Held-out evaluation: metrics on the test split, written into the bundle as JSON and PNG.

Used at the end of every training run and by ``lulc evaluate``, which rebuilds the split from
the settings recorded in the bundle (same seed, same blocks), so the test pixels are the ones
the model never trained on — or evaluates every labelled pixel of new data with ``--split all``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError, SettingError
from lulc.training.baseline import random_forest
from lulc.training.config import TemporalConfig, TrainConfig
from lulc.training.data import SPLITS, TileSet, count_test_blocks, normalize
from lulc.training.figures import confusion_figure
from lulc.training.inputs import prepare_samples
from lulc.training.labels import IGNORE
from lulc.training.metrics import confusion_matrix, report
from lulc.training.series import normalize_series, temporal_samples

METRICS = "metrics.json"
CONFUSION = "confusion.png"


def predict_classes(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Argmax class per pixel, batch by batch.

    ``predict_on_batch`` rather than ``predict``: Keras feeds numpy arrays to ``predict``
    through a tf.data parallel map, which TensorFlow rewrites under op determinism and then
    logs an ``E0000 ... use_unbounded_threadpool`` line on every run.
    """
    return np.concatenate([np.argmax(model.predict_on_batch(x[i : i + batch_size]), axis=-1).astype(np.uint8)
                           for i in range(0, len(x), batch_size)])


def evaluate_tiles(model, tiles: TileSet, class_names: list[str], task: str) -> dict:
    """Metrics per pixel for segmentation, per patch for scene classifiers (one vote each)."""
    pred = predict_classes(model, tiles.x)
    y, valid = tiles.y, tiles.valid
    if task == "scene":
        centre = tiles.x.shape[1] // 2
        y, pred, valid = y[:, centre, centre], pred[:, centre, centre], valid.any(axis=(1, 2))
    y = np.where(valid, y, IGNORE)
    metrics = report(confusion_matrix(y, pred, len(class_names), IGNORE), class_names)
    metrics["unit"] = "patch" if task == "scene" else "pixel"
    return metrics


def write_evaluation(metrics: dict, folder: Path, bundle: Bundle | None = None) -> None:
    """metrics.json + confusion.png into ``folder``; recorded as artefacts when it is the bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp_json, tmp_png = folder / f".{METRICS}.tmp", folder / f".tmp.{CONFUSION}"
    tmp_json.write_text(json.dumps(metrics, indent=2))
    confusion_figure(metrics, tmp_png)
    if bundle is None:
        os.replace(tmp_json, folder / METRICS)
        os.replace(tmp_png, folder / CONFUSION)
        return
    bundle.add_artifact("metrics", tmp_json, "json", dest=METRICS, details={"split": metrics.get("split", "test")})
    bundle.add_artifact("confusion", tmp_png, "png", dest=CONFUSION)


def bundle_classes(manifest) -> list[dict]:
    """The bundle's classes with the label value each was trained from (ids for old bundles)."""
    values = (manifest.provenance or {}).get("label_values") or [c.id for c in manifest.classes]
    return [{"id": c.id, "name": c.name, "color": tuple(c.color), "value": int(v)} for c, v in zip(manifest.classes, values)]


def _samples(manifest, recorded: dict, image, labels, data, stack, work: Path,
             align: bool = False) -> tuple[TileSet, list[str], list[dict]]:
    """Raw samples of the recorded training data, or of new data (``align``: warped onto the
    first image's grid, as `lulc train --align` does); channels and classes."""
    known = bundle_classes(manifest)
    if manifest.input.time_steps:
        if image or data:
            raise SettingError(None, "a temporal bundle is evaluated on a time-series stack: use --stack and --labels")
        if align:
            raise SettingError("--align", "is for single-date rasters; align a time series when stacking it "
                                          "(`lulc stack --align`)")
        cfg = TemporalConfig.from_record(recorded)
        cfg = replace(cfg, stack=stack or cfg.stack, labels=labels or cfg.labels)
        series = temporal_samples(cfg, work, known)
        return series.tiles, series.info.channels, series.classes
    if stack:
        raise SettingError(None, "--stack is for temporal bundles; evaluate this bundle with --image and --labels")
    cfg = TrainConfig.from_record(recorded)
    if data:
        cfg = replace(cfg, data=data, image=None, labels=None)
    elif image or labels:
        cfg = replace(cfg, image=image or cfg.image, labels=labels or cfg.labels, data=None)
    cfg = replace(cfg, align=align or cfg.align)
    samples = prepare_samples(cfg, work, known)
    return samples.tiles, samples.spec.channels, samples.classes


def normalize_for(manifest, tiles: TileSet) -> np.ndarray:
    """The model's input: z-scored; single-date nodata pixels 0, missing dates of a series NaN."""
    if manifest.input.time_steps:
        return normalize_series(tiles.x, manifest.normalization)
    return normalize(tiles.x, tiles.valid, manifest.normalization)


def evaluate_bundle(bundle_dir: str, image: list[str] | None = None, labels: str | None = None,
                    data: str | None = None, split: str = "test", output: str | None = None,
                    stack: str | None = None, baseline: str | None = None, align: bool = False) -> dict:
    """Evaluate a trained bundle on its recorded test split, or on new data with ``split='all'``;
    ``baseline='rf'`` adds a random forest fitted on the same training blocks; ``align`` warps
    rasters and labels off the first image's grid onto it."""
    from lulc.runtime.backends.keras_backend import load_keras_model

    if split not in (*SPLITS, "all"):
        raise SettingError("--split", f"must be one of {', '.join(SPLITS)} or all, not {split}")
    if baseline not in (None, "rf"):
        raise SettingError("--baseline", f"must be rf, not {baseline}")
    if baseline and (image or labels or data or stack or split == "all"):
        raise SettingError(None, "--baseline rf is fitted on the bundle's own training blocks and scored on its test "
                                 "(or val) split: run it without --image/--labels/--data/--stack and --split all")
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    recorded = (m.provenance or {}).get("config")
    if not recorded:
        raise LulcError(f"{bundle_dir} records no training config; it was not made by `lulc train`")
    with tempfile.TemporaryDirectory(prefix="lulc-eval-") as work:
        all_tiles, channels, classes = _samples(m, recorded, image, labels, data, stack, Path(work), align)
    if [c["name"] for c in classes] != m.class_names:
        raise LulcError(f"the data's classes ({', '.join(c['name'] for c in classes)}) differ from the "
                        f"bundle's ({', '.join(m.class_names)}); pass the bundle's class list with matching labels")
    if channels != m.input.channels:
        raise LulcError(f"the data's bands {', '.join(channels)} differ from the bundle's {', '.join(m.input.channels)}")
    all_tiles.x = normalize_for(m, all_tiles)
    tiles = all_tiles if split == "all" else all_tiles.part(split)
    if not len(tiles):
        raise LulcError(f"no labelled sample in the {split} split of this data")
    task = "scene" if m.task == "scene" else "segmentation"
    metrics = evaluate_tiles(load_keras_model(bundle), tiles, m.class_names, task)
    metrics.update(split=split, blocks=count_test_blocks(tiles))
    if baseline:

        metrics["baseline"] = random_forest(all_tiles.part("train"), tiles, m.class_names, task, recorded.get("seed", 0))
    write_evaluation(metrics, Path(output) if output else bundle.root, None if output else bundle)
    return metrics
