"""Held-out evaluation: metrics on the test split, written into the bundle as JSON and PNG.

Used at the end of every training run and by ``lulc evaluate``, which rebuilds the split from
the settings recorded in the bundle (same seed, same blocks), so the test pixels are the ones
the model never trained on — or evaluates every labelled pixel of new data with ``--split all``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import LulcError
from lulc.training.data import SPLITS, TileSet, normalize
from lulc.training.labels import IGNORE
from lulc.training.metrics import confusion_matrix, report

METRICS = "metrics.json"
CONFUSION = "confusion.png"


def predict_classes(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1).astype(np.uint8)


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


def confusion_figure(metrics: dict, path: Path) -> None:
    """Row-normalised confusion matrix with counts, so rare classes stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = list(metrics["per_class"])
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"OA {metrics['overall_accuracy']:.3f}  kappa {metrics['kappa']:.3f}  macro F1 {metrics['macro_f1']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046, label=f"share of reference {metrics.get('unit', 'pixel')}s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def evaluate_bundle(bundle_dir: str, image: list[str] | None = None, labels: str | None = None,
                    data: str | None = None, split: str = "test", output: str | None = None) -> dict:
    """Evaluate a trained bundle on its recorded test split, or on new data with ``split='all'``."""
    from lulc.runtime.backends.keras_backend import load_keras_model
    from lulc.training.config import TrainConfig
    from lulc.training.inputs import prepare_samples

    if split not in (*SPLITS, "all"):
        raise LulcError(f"--split must be one of {', '.join(SPLITS)} or all")
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    recorded = (m.provenance or {}).get("config")
    if not recorded:
        raise LulcError(f"{bundle_dir} records no training config; it was not made by `lulc train`")
    cfg = TrainConfig(**{f.name: recorded[f.name] for f in fields(TrainConfig) if f.name in recorded})
    if data:
        cfg = replace(cfg, data=data, image=None, labels=None)
    elif image or labels:
        cfg = replace(cfg, image=image or cfg.image, labels=labels or cfg.labels, data=None)
    with tempfile.TemporaryDirectory(prefix="lulc-eval-") as work:
        samples = prepare_samples(cfg, Path(work))
    if [c["name"] for c in samples.classes] != m.class_names:
        raise LulcError(f"the data's classes ({', '.join(c['name'] for c in samples.classes)}) differ from the "
                        f"bundle's ({', '.join(m.class_names)}); pass the bundle's class list with matching labels")
    if samples.spec.channels != m.input.channels:
        raise LulcError(f"the data's bands {', '.join(samples.spec.channels)} differ from the bundle's "
                        f"{', '.join(m.input.channels)}")
    tiles = samples.tiles if split == "all" else samples.tiles.part(split)
    if not len(tiles):
        raise LulcError(f"no labelled sample in the {split} split of this data")
    tiles.x = normalize(tiles.x, tiles.valid, m.normalization)
    metrics = evaluate_tiles(load_keras_model(bundle), tiles, m.class_names, m.task)
    metrics["split"] = split
    write_evaluation(metrics, Path(output) if output else bundle.root, None if output else bundle)
    return metrics
