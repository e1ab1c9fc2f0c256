"""A random forest on the same training blocks: does the deep model beat the classic baseline?

Remote-sensing reviewers ask this first. The forest sees what the model saw — the
normalised bands (all dates of a series; missing dates stay NaN, which scikit-learn's trees
route on) of a seeded subsample of the labelled, valid pixels of the training blocks — and
is scored on exactly the pixels (or patches) of the model's own evaluation, so the two rows
of the table differ only in the classifier.
"""
from __future__ import annotations

import numpy as np

from lulc.training.data import TileSet
from lulc.training.labels import IGNORE
from lulc.training.metrics import confusion_matrix, report

#: training pixels the forest is fitted on (a subsample: the blocks hold millions)
MAX_TRAIN_PIXELS = 50_000
TREES = 100


def _pixels(tiles: TileSet, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) features and (N,) labels of the labelled valid pixels; overlapping tiles'
    shared pixels once each with ``dedupe`` (for training), every occurrence otherwise
    (for scoring, as the model's metrics count them)."""
    keep = (tiles.y != IGNORE) & tiles.valid
    if dedupe and tiles.origins is not None:
        size = tiles.y.shape[1]
        rows = tiles.origins[:, 0, None, None] + np.arange(size)[None, :, None]
        cols = tiles.origins[:, 1, None, None] + np.arange(tiles.y.shape[2])[None, None, :]
        coords = np.stack(np.broadcast_arrays(rows, cols), axis=-1)[keep]
        _, first = np.unique(coords, axis=0, return_index=True)
        return tiles.x[keep][first], tiles.y[keep][first]
    return tiles.x[keep], tiles.y[keep]


def _patches(tiles: TileSet) -> tuple[np.ndarray, np.ndarray]:
    """Scene patches: per-channel mean and std of the valid pixels, labelled by the centre
    pixel as the model's patch metrics are."""
    valid = tiles.valid[..., None]
    count = np.maximum(valid.sum(axis=(1, 2)), 1)
    mean = (tiles.x * valid).sum(axis=(1, 2)) / count
    std = np.sqrt(np.maximum(((tiles.x - mean[:, None, None]) ** 2 * valid).sum(axis=(1, 2)) / count, 0))
    centre = tiles.y.shape[1] // 2
    y = np.where(tiles.valid.any(axis=(1, 2)), tiles.y[:, centre, centre], IGNORE)
    keep = y != IGNORE
    return np.concatenate([mean, std], axis=1)[keep], y[keep]


def random_forest(train: TileSet, test: TileSet, class_names: list[str], task: str, seed: int) -> dict:
    """Fit a random forest on ``train`` and report it on ``test`` like the model's metrics."""
    from sklearn.ensemble import RandomForestClassifier

    if task == "scene":
        (x, y), (x_test, y_test) = _patches(train), _patches(test)
    else:
        (x, y), (x_test, y_test) = _pixels(train, dedupe=True), _pixels(test, dedupe=False)
    if len(x) > MAX_TRAIN_PIXELS:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), MAX_TRAIN_PIXELS, replace=False))
        x, y = x[pick], y[pick]
    forest = RandomForestClassifier(n_estimators=TREES, random_state=seed, n_jobs=-1)
    forest.fit(x, y)
    pred = forest.predict(x_test).astype(np.int64)
    metrics = report(confusion_matrix(y_test, pred, len(class_names), IGNORE), class_names)
    return {"model": "random-forest", "trees": TREES, "train_samples": int(len(x)), "seed": seed,
            "unit": "patch" if task == "scene" else "pixel", **metrics}
