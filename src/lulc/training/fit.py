"""The Keras fit loop: TensorBoard, a checkpoint every epoch, ``--resume`` and early stopping.

The checkpoint folder holds ``last.keras`` (model + optimizer state), ``best.keras`` (lowest
validation loss) and ``state.json``; each file is written under a temporary name and renamed,
so an interrupted run always leaves the last good checkpoint intact. Early stopping is part
of the same callback so that its patience counter survives a resume too. Batch-norm
statistics are recalibrated before every validation (:mod:`lulc.training.batchnorm`).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import keras
import numpy as np

from lulc.runtime.core.errors import LulcError
from lulc.training.batchnorm import BatchNormCalibration

logger = logging.getLogger(__name__)

STATE = "state.json"


def _save_model(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class Checkpoint(keras.callbacks.Callback):
    """Save last/best each epoch and stop after ``patience`` epochs without a better val loss."""

    def __init__(self, folder: Path, fingerprint: str, patience: int, state: dict | None = None):
        super().__init__()
        self.folder = folder
        self.state = state or {"fingerprint": fingerprint, "epoch": 0, "history": {}, "best_val_loss": None,
                               "best_epoch": None, "wait": 0, "stopped_early": False}
        self.patience = patience

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        s = self.state
        for k, v in (logs or {}).items():
            s["history"].setdefault(k, []).append(round(float(v), 5))
        val = (logs or {}).get("val_loss")
        improved = val is not None and np.isfinite(val) and (s["best_val_loss"] is None or val < s["best_val_loss"])
        if improved:
            s.update(best_val_loss=float(val), best_epoch=epoch + 1, wait=0)
            _save_model(self.model, self.folder / "best.keras")
        else:
            s["wait"] += 1
        _save_model(self.model, self.folder / "last.keras")
        s["epoch"] = epoch + 1
        if self.patience and s["wait"] >= self.patience:
            s["stopped_early"] = True
            self.model.stop_training = True
            logger.info("early stopping after epoch %d: no better validation loss for %d epochs", epoch + 1, s["wait"])
        tmp = self.folder / (STATE + ".tmp")
        tmp.write_text(json.dumps(s))
        os.replace(tmp, self.folder / STATE)


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds an epoch checkpoint that a run can continue from."""
    return (folder / STATE).is_file() and (folder / "last.keras").is_file()


def load_state(folder: Path, fingerprint: str) -> dict:
    path = folder / STATE
    if not has_checkpoint(folder):
        raise LulcError(f"nothing to resume: no checkpoint in {folder}; start the run without --resume")
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        raise LulcError("cannot resume: the checkpoint was written with other data or settings "
                        "(only --epochs and --patience may change); rerun with --overwrite to start over")
    return state


def fit(model: keras.Model, train_ds, val_ds, epochs: int, learning_rate: float, folder: Path, logs: Path,
        fingerprint: str, patience: int, resume: bool, calibration: np.ndarray, batch_size: int
        ) -> tuple[keras.Model, dict]:
    """Train (or continue training) and return the best model and the run's state record.

    ``calibration``: normalised training tiles for the batch-norm statistics.
    """

    folder.mkdir(parents=True, exist_ok=True)
    state = None
    if resume:
        state = load_state(folder, fingerprint)
        model = keras.saving.load_model(folder / "last.keras")
        logger.info("resuming after epoch %d", state["epoch"])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(), weighted_metrics=["accuracy"])
    checkpoint = Checkpoint(folder, fingerprint, patience, state)
    start = checkpoint.state["epoch"]
    if start < epochs and not checkpoint.state["stopped_early"]:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
                  verbose=1 if sys.stderr.isatty() else 2, shuffle=False,
                  callbacks=[BatchNormCalibration(calibration, batch_size),
                             keras.callbacks.TensorBoard(log_dir=str(logs), write_graph=False), checkpoint])
    best = folder / "best.keras"
    if best.is_file():
        model = keras.saving.load_model(best)
    return model, checkpoint.state
