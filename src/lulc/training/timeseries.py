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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError, SettingError
from lulc.runtime.core.manifest import InputSpec, Normalization
from lulc.runtime.kernels.temporal import reference_mask_dates
from lulc.runtime.tools.timestack import StackInfo, read_stack_info
from lulc.training import bundle_writer
from lulc.training.config import TEMPORAL_ARCHS, TemporalConfig, require_multiple
from lulc.training.data import SampleSpec, TileSet
from lulc.training.labels import IGNORE
from lulc.training.sources import RasterStack

logger = logging.getLogger(__name__)

__all__ = ["TEMPORAL_ARCHS", "TemporalConfig", "train_temporal"]


class TemporalStack(RasterStack):
    """A ``lulc stack`` read as the runtime reads it: NaN on missing dates, valid if any date."""

    def __init__(self, path: str):
        self.info = read_stack_info(path)
        super().__init__([str(self.info.path)])

    def read(self, window):
        raw, _ = super().read(window)
        return reference_mask_dates(raw, self.nodata, len(self.info.bands))


def band_stats(x: np.ndarray, bands: int, time_steps: int) -> Normalization:
    """Per band mean/std over all observed values of all dates, repeated for each date."""
    per_band = x.reshape(-1, bands)
    per_band = per_band[~np.isnan(per_band).any(axis=1)].astype(np.float64)
    if not len(per_band):
        raise LulcError("the training split has no observed pixel on any date; check the stack's nodata and masks")
    mean, std = per_band.mean(axis=0), np.maximum(per_band.std(axis=0), 1e-6)
    p1, p99 = np.percentile(per_band, [1, 99], axis=0)
    rep = lambda v: np.tile(v, time_steps).tolist()  # noqa: E731
    return Normalization(mean=rep(mean), std=rep(std), p1=rep(p1), p99=rep(p99))


def unstable_water(x: np.ndarray, bands: list[str], water_bands: list[str], threshold: float) -> np.ndarray:
    """(N, H, W) True where the NDWI (a - b) / (a + b) crosses ``threshold`` across observed dates.

    The change-detection paper excluded such shoreline pixels: their label is right for
    some dates and wrong for others, which teaches the model noise.
    """
    missing = [b for b in water_bands if b not in bands]
    if len(water_bands) != 2 or missing:
        raise SettingError("--mask-unstable-water",
                           f"needs two of the stack's bands ({', '.join(bands)}), e.g. green,nir")
    seq = x.reshape(*x.shape[:3], -1, len(bands))
    a, b = seq[..., bands.index(water_bands[0])], seq[..., bands.index(water_bands[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (a - b) / (a + b)
    seen = ~np.isnan(ndwi)
    return ((ndwi > threshold) & seen).any(axis=-1) & ((ndwi <= threshold) & seen).any(axis=-1)


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


def normalize_series(x: np.ndarray, norm: Normalization) -> np.ndarray:
    """Z-score per channel; missing dates stay NaN, which the models mask (never a zero reflectance)."""
    return ((x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)).astype(np.float32)


@dataclass
class SeriesSamples:
    tiles: TileSet  # raw values, NaN on missing dates
    classes: list[dict]
    info: StackInfo  # bands, dates, channels, path
    dtype: str
    nodata: float | None
    water: dict | None  # what --mask-unstable-water dropped


def temporal_samples(cfg: TemporalConfig, work: Path, known: list[dict] | None = None) -> SeriesSamples:
    """Samples of a stack and its labels, cut like single-date ones, unstable shorelines dropped.

    ``known``: a bundle's classes, for evaluation (see :func:`lulc.training.labels.prepare_labels`).
    """
    from lulc.training.data import extract_tiles
    from lulc.training.labels import prepare_labels
    from lulc.training.sources import open_raster

    with TemporalStack(cfg.stack) as stack:
        labels, classes = prepare_labels(cfg.labels, stack, work, cfg.label_column, cfg.classes, known=known)
        spec = SampleSpec(tile=cfg.tile, stride=cfg.stride or max(1, cfg.tile // 2),
                          split_block=cfg.split_block or 2 * cfg.tile, seed=cfg.seed, ignore=IGNORE)
        with open_raster(labels, "label raster") as lab:
            tiles, _ = extract_tiles(stack, lab, spec, statistics=False)  # see band_stats
        info, dtype, nodata = stack.info, stack.dtype, stack.nodata
    water = None
    if cfg.mask_unstable_water:
        unstable = unstable_water(tiles.x, info.bands, cfg.mask_unstable_water.split(","), cfg.water_threshold)
        water = {"bands": cfg.mask_unstable_water, "threshold": cfg.water_threshold,
                 "labels_ignored": int((unstable & (tiles.y != IGNORE)).sum())}
        tiles.y[unstable] = IGNORE
    return SeriesSamples(tiles, classes, info, dtype, nodata, water)


def _build(cfg: TemporalConfig, channels: int, k: int, time_steps: int):
    from lulc.training.models import build_model

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
    from lulc.training.evaluate import evaluate_tiles
    from lulc.training.models import build_model

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
    from lulc.training.models import task_of
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
