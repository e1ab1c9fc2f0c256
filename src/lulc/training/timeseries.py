"""Temporal training: a ``lulc stack`` + labels -> pixel-lstm / mtlcc / fcn-convlstm bundle.

Samples are cut by the same spatially blocked splitter as single-date training
(:func:`lulc.training.data.extract_tiles`); only the reader differs: a date is missing
for a pixel when any of its bands is nodata, missing dates become NaN (what the runtime
feeds, see ``lulc.runtime.kernels.temporal``) and a pixel is usable if any date was
observed. Normalisation statistics are per band, pooled over all observed dates, and
repeated for every date, so a mostly cloudy date does not get statistics of its own.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError, SettingError
from lulc.runtime.core.manifest import InputSpec
from lulc.training import bundle_writer
from lulc.training.config import TEMPORAL_ARCHS, TemporalConfig, require_multiple
from lulc.training.data import TileSet
from lulc.training.evaluate import evaluate_tiles
from lulc.training.models import build_model, task_of
from lulc.training.series import band_stats, normalize_series, temporal_samples

logger = logging.getLogger(__name__)

__all__ = ["TEMPORAL_ARCHS", "TemporalConfig", "train_temporal"]


def random_dates(ds, time_steps: int, bands: int, length: int):
    """Per batch, hide all but a random sorted subset of ``length`` dates (as missing, NaN).

    The change-detection paper drew sequences at random from a pool of dates per batch; with a
    fixed-T model the same is done by masking, which the recurrent cells already skip.
    """
    import tensorflow as tf

    def drop(x, y, w):
        keep = tf.argsort(tf.random.uniform((time_steps,)))[:length]
        keep = tf.repeat(tf.reduce_sum(tf.one_hot(keep, time_steps), axis=0) > 0, bands)
        return tf.where(keep, x, tf.constant(np.nan, x.dtype)), y, w

    return ds.map(drop)


def _build(cfg: TemporalConfig, channels: int, k: int, time_steps: int):

    try:
        model = build_model(cfg.arch, channels, k, time_steps=time_steps, **cfg.model_options)
    except (ValueError, TypeError) as exc:
        raise LulcError(f"cannot build {cfg.arch}: {exc}") from None
    record = {}
    if cfg.init_from:
        if cfg.arch != "fcn-convlstm":
            raise SettingError("--init-from",
                               "starts the fcn-convlstm encoder from a unet bundle; other archs have no encoder")
        from lulc.runtime.backends.keras_backend import load_keras_model
        from lulc.training.models.fcn_convlstm import init_encoder_from

        source = Bundle.load(cfg.init_from)
        copied = init_encoder_from(model, load_keras_model(source))
        if not copied:
            raise LulcError(f"{cfg.init_from} shares no encoder layer with this model (same bands, depth and width?)")
        record = {"bundle": str(Path(cfg.init_from).resolve()), "fingerprint": source.fingerprint(), "layers": copied}
    return model, record


def _fit(cfg: TemporalConfig, model, tiles: TileSet, staging: Path, time_steps: int, bands: int, select=None):
    # Keras-loading modules are imported where they are used: `lulc --help` stays fast
    from lulc.training.batchnorm import calibration_sample
    from lulc.training.dataset import make_dataset
    from lulc.training.fit import fit
    train = tiles.part("train")
    train_ds = make_dataset(train, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed)
    if cfg.sequence == "random" and select is None:
        train_ds = random_dates(train_ds, time_steps, bands, cfg.sequence_length or max(1, time_steps // 2))
    val_ds = make_dataset(tiles.part("val"), cfg.batch_size)
    fingerprint = f"{cfg.arch}-{cfg.seed}-{select}"
    checkpoints = staging / bundle_writer.CHECKPOINTS / str(select)
    return fit(model, train_ds, val_ds, cfg.epochs, cfg.learning_rate, checkpoints, staging / "logs", fingerprint,
               cfg.patience, False, calibration_sample(train.x, cfg.seed), cfg.batch_size)


def single_date_baseline(cfg: TemporalConfig, tiles: TileSet, names: list[str], bands: int, staging: Path,
                         dates: list[str]) -> dict:
    """Test metrics of a U-Net trained on one date of the same samples and split.

    The date is the one with the most observed training pixels (ties: the earlier), so the
    baseline gets its best-observed scene; its cloudy pixels are unlabeled, as they would be.
    """

    train = tiles.part("train")
    seen = ~np.isnan(train.x.reshape(*train.x.shape[:3], -1, bands)).any(axis=-1)
    t = int(seen.sum(axis=(0, 1, 2)).argmax())
    x = tiles.x[..., t * bands : (t + 1) * bands]
    valid = ~np.isnan(x).any(axis=-1)
    one = TileSet(np.nan_to_num(x), tiles.y, valid, tiles.split, tiles.split_record)
    model = build_model("unet", bands, len(names), depth=2, width=16)
    model, _ = _fit(cfg, model, one, staging, 1, bands, select=t)
    metrics = evaluate_tiles(model, one.part("test"), names, "segmentation")
    return {"date": dates[t], "metrics": metrics}


def train_temporal(cfg: TemporalConfig, config_record: dict | None = None) -> Bundle:
    """Train a temporal model on a stack and write a complete, evaluated bundle to ``cfg.output``."""
    if cfg.arch not in TEMPORAL_ARCHS:
        raise SettingError("--arch", f"{cfg.arch} is not a temporal model; choose one of {', '.join(TEMPORAL_ARCHS)}")
    if not cfg.stack or not cfg.labels:
        raise SettingError(None, f"--arch {cfg.arch} trains on a time series: "
                                 "give --stack (from `lulc stack`) and --labels")
    return bundle_writer.write_bundle(cfg, config_record,
                                      lambda staging: _train_temporal_into(cfg, config_record, staging))


def _train_temporal_into(cfg: TemporalConfig, config_record: dict | None, staging: Path) -> None:
    from lulc.training.models.recurrent import MISSING_DATES, RECURRENCE

    t0 = bundle_writer.start_run(staging)
    samples = temporal_samples(cfg, staging / bundle_writer.WORK)
    tiles, classes, info = samples.tiles, samples.classes, samples.info
    names, bands, steps = [c["name"] for c in classes], len(info.bands), len(info.dates)
    norm = band_stats(tiles.part("train").x, bands, steps)
    tiles.x = normalize_series(tiles.x, norm)

    bundle_writer.deterministic(cfg.seed)
    model, init = _build(cfg, len(info.channels), len(classes), steps)
    divisor = getattr(model, "divisor", 1)
    require_multiple(cfg, "tile", divisor, cfg.arch)
    tile = bundle_writer.runtime_tiles(cfg, divisor, 0 if cfg.arch == "pixel-lstm" else cfg.infer_overlap)
    model, state = _fit(cfg, model, tiles, staging, steps, bands)
    test = tiles.part("test")
    metrics = {"test": bundle_writer.held_out_metrics(model, test, names, "segmentation")}
    if cfg.compare_single_date:
        metrics["single_date_unet"] = single_date_baseline(cfg, tiles, names, bands, staging, info.dates)
    bundle_writer.finish_bundle(
        staging, cfg, config_record, model=model, test=test, samples=8, classes=classes, state=state, metrics=metrics,
        t0=t0, task=task_of(cfg.arch),
        input_spec=InputSpec(bands=info.channels, dtype=samples.dtype, nodata=samples.nodata, time_steps=steps,
                             dates=info.dates),
        normalization=norm, tile=tile,
        split=tiles.split_record,
        data={"stack": str(info.path.resolve()), "labels": str(Path(cfg.labels).resolve()), "nodata": samples.nodata},
        temporal={"bands_per_date": info.bands, "time_steps": steps, "recurrence": RECURRENCE,
                  "missing_dates": MISSING_DATES, "sequence": cfg.sequence, "init_from": init or None,
                  "unstable_water": samples.water})
