"""What every training run shares, single-date or temporal: the staged output, seeding, and
the finished bundle (manifest, provenance, model, samples, evaluation, learning curve).

A run's own module only decides what differs between kinds of model (samples, model,
input spec, tiling); :func:`write_bundle` wraps it in the output checks and the atomic
publish, and :func:`finish_bundle` turns what it trained into the bundle every stage reads.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lulc.runtime import __version__
from lulc.runtime.core.bundle import SAMPLES, Bundle, now_iso
from lulc.runtime.core.errors import SettingError
from lulc.runtime.core.manifest import ClassInfo, InputSpec, Manifest, Normalization, Task, TileSpec
from lulc.training import evaluate
from lulc.training.config import TemporalConfig, TrainConfig, require_multiple
from lulc.training.data import TileSet, count_test_blocks
from lulc.training.figures import learning_curve_figure
from lulc.training.labels import IGNORE
from lulc.training.outputs import check_bundle_output, publish, staged

#: per-epoch checkpoints in the staging folder (what --resume continues from)
CHECKPOINTS = "checkpoint"
#: scratch files of a run (rasterized labels, warped inputs) in the staging folder
WORK = "work"
CURVES = "learning_curve.png"


def write_bundle(cfg: TrainConfig | TemporalConfig, config_record: dict | None, build: Callable[[Path], None],
                 resumable: Callable[[Path], bool] = lambda staging: False) -> Bundle:
    """Check the output before any work, let ``build`` fill the staging folder, publish it."""
    resume = getattr(cfg, "resume", False)
    output = check_bundle_output(cfg.output, [*cfg.inputs, (config_record or {}).get("file")], cfg.overwrite, resume)
    with staged(output, cfg.overwrite, resume, resumable) as staging:
        build(staging)
        publish(staging, output)
    return Bundle.load(output)


def start_run(staging: Path) -> float:
    """The run's start time, with its scratch folder made (kept on --resume)."""
    (staging / WORK).mkdir(exist_ok=True)
    return time.time()


def deterministic(seed: int) -> None:
    """Same seed, same data, same machine -> same weights (op determinism costs a little speed)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def runtime_tiles(cfg: TrainConfig | TemporalConfig, divisor: int, overlap: int) -> TileSpec:
    """The tiling lulc-infer will use, checked now that the model's stride (``divisor``) is known."""
    require_multiple(cfg, "infer_tile", divisor, cfg.arch)
    if overlap >= cfg.infer_tile:
        raise SettingError("--infer-overlap", f"{overlap} must be smaller than --infer-tile {cfg.infer_tile}")
    return TileSpec(size=cfg.infer_tile, overlap=overlap, divisor=divisor)


def held_out_metrics(model: Any, test: TileSet, names: list[str], task: str) -> dict:
    """Held-out metrics with the number of spatial blocks behind them (warns when few)."""
    metrics = evaluate.evaluate_tiles(model, test, names, task)
    metrics.update(split="test", blocks=count_test_blocks(test))
    return metrics


def _run_record(cfg: TrainConfig | TemporalConfig, classes: list[dict], state: dict, metrics: dict,
                t0: float) -> dict:
    import keras

    return {
        "lulc_version": __version__, "created": now_iso(), "config": asdict(cfg),
        # the label raster's own value of each class (model id i <- value label_values[i])
        "label_values": [c["value"] for c in classes],
        "history": state["history"], "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"], "metrics": metrics, "train_seconds": round(time.time() - t0, 1),
        "keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
    }


def finish_bundle(staging: Path, cfg: TrainConfig | TemporalConfig, config_record: dict | None, *, model: Any,
                  test: TileSet, samples: int, classes: list[dict], state: dict, metrics: dict, t0: float,
                  task: Task, input_spec: InputSpec, normalization: Normalization, tile: TileSpec,
                  **provenance: Any) -> Bundle:
    """Write the trained model as a complete bundle in ``staging``, ready to publish.

    The manifest's classes get ids 0..K-1 (their label values go to the provenance); the
    provenance records the whole config, where each setting came from, the training history
    and ``metrics``, plus the run's own ``provenance`` entries (data, split, ...). ``samples``
    test tiles are kept for the export parity gates. Checkpoints and scratch files go.
    """
    record = _run_record(cfg, classes, state, metrics, t0)
    record.update(config_sources=config_record or {"file": None}, **provenance)
    manifest = Manifest(task=task, architecture=cfg.arch, input=input_spec, normalization=normalization, tile=tile,
                        classes=[ClassInfo(id=c["id"], name=c["name"], color=c["color"]) for c in classes],
                        ignore_index=IGNORE, provenance=record)
    model.save(staging / "model.keras")
    np.savez_compressed(staging / SAMPLES, x=test.x[:samples], y=test.y[:samples])
    bundle = Bundle(staging, manifest)
    bundle.save()
    bundle.add_artifact("keras", staging / "model.keras", "keras")
    bundle.add_artifact("samples", staging / SAMPLES, "npz",
                        details={"split": "test", "tiles": int(min(samples, len(test)))})
    evaluate.write_evaluation(metrics["test"], staging, bundle)
    learning_curve_figure(record["history"], staging / f".tmp.{CURVES}", record.get("best_epoch"))
    bundle.add_artifact("learning_curve", staging / f".tmp.{CURVES}", "png", dest=CURVES)
    for scratch in (CHECKPOINTS, WORK):
        shutil.rmtree(staging / scratch, ignore_errors=True)
    return bundle
