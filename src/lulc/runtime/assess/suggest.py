"""``lulc suggest-samples BUNDLE IMAGE -n N -o points.gpkg``: where to label next.

Active learning's simplest useful rule: label the pixels the model is least sure about,
spread out so one confused field does not take every point. The image goes through the same
pipeline as ``lulc-infer`` (a hidden probability map beside the output, removed afterwards),
then that map is streamed block by block: each block offers its most uncertain pixels at
least ``min_distance`` apart, and the N most uncertain of those offers, again at least
``min_distance`` apart, become the points. Memory holds N points per block, never the map.

Uncertainty (1 = the model cannot choose, 0 = certain), from the map's probability bands:
``entropy`` H(p) / ln K, ``margin`` 1 − (p₁ − p₂), ``least`` 1 − p₁ (least confidence).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio

from lulc.runtime.assess.maps import map_classes
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import SettingError
from lulc.runtime.infer import InferOptions, run_inference
from lulc.runtime.io.mapformat import NODATA_CLASS, PROB_SCALE
from lulc.runtime.io.outputs import check_outputs, locked_all, temp_path
from lulc.runtime.io.qgis import sidecar_paths
from lulc.runtime.io.vector import write_points

logger = logging.getLogger(__name__)

MEASURES = ("entropy", "margin", "least")
SCHEMA = {"id": "int", "uncertainty": "float", "map_value": "int", "map_class": "str", "class": "str"}


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    """Uncertainty in [0, 1] of class probabilities ``probs`` (K, ...), renormalised to sum to
    1 (a map's uint8 probabilities are rounded to 1/254)."""
    if measure not in MEASURES:
        raise SettingError("--measure", f"must be one of {', '.join(MEASURES)}, not {measure}")
    p = np.clip(probs.astype(np.float64), 0.0, None)
    total = p.sum(axis=0)
    p = np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[0]), where=total > 0)
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
        return h / np.log(p.shape[0])
    top = np.sort(p, axis=0)
    return 1 - (top[-1] - top[-2]) if measure == "margin" else 1 - top[-1]


def spread(candidates: list[tuple[float, float, float, dict]], n: int, min_distance: float) -> list:
    """Greedy: the most uncertain first, each at least ``min_distance`` from those kept
    (a grid of ``min_distance`` cells finds the neighbours to check)."""
    kept: list = []
    cells: dict[tuple[int, int], list[tuple[float, float]]] = {}
    size = max(min_distance, 1e-9)
    for u, x, y, extra in sorted(candidates, key=lambda c: (-c[0], -c[2], c[1])):
        cx, cy = int(x // size), int(y // size)
        near = [p for i in (-1, 0, 1) for j in (-1, 0, 1) for p in cells.get((cx + i, cy + j), [])]
        if min_distance > 0 and any((x - px) ** 2 + (y - py) ** 2 < min_distance**2 for px, py in near):
            continue
        kept.append((u, x, y, extra))
        cells.setdefault((cx, cy), []).append((x, y))
        if len(kept) == n:
            break
    return kept


def suggest_samples(bundle_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                    n: int, measure: str = "entropy", min_distance: float = 0.0, opts: InferOptions | None = None,
                    overwrite: bool = False) -> list[dict]:
    """The ``n`` most uncertain classified pixels at least ``min_distance`` map units apart,
    written as points to ``output``; returns them, most uncertain first."""
    if n < 1 or min_distance < 0:
        raise SettingError(None, "-n must be at least 1 and --min-distance 0 or more")
    if measure not in MEASURES:
        raise SettingError("--measure", f"must be one of {', '.join(MEASURES)}, not {measure}")
    bundle = Bundle.load(bundle_dir)
    out = check_outputs({"output": output}, list(inputs), [bundle.root], overwrite)["output"]
    work = temp_path(out, "probabilities.tif")
    leftovers = [work, *sidecar_paths(work).values()]
    with locked_all([out]):
        try:
            run_inference(bundle_dir, list(inputs), work,
                          replace(opts or InferOptions(), probabilities=True, confidence=False, quicklook=None,
                                  overwrite=True, resume=False))
            with rasterio.open(work) as src:
                names = map_classes(src).names
                candidates = []
                for _, window in src.block_windows(1):
                    classes = src.read(1, window=window)
                    valid = classes != NODATA_CLASS
                    if not valid.any():
                        continue
                    u = uncertainty(src.read(list(range(2, src.count + 1)), window=window) / PROB_SCALE, measure)
                    rows, cols = np.nonzero(valid)
                    order = np.argsort(-u[rows, cols], kind="stable")[: max(n * 50, 1000)]
                    xs, ys = rasterio.transform.xy(src.window_transform(window), rows[order], cols[order])
                    block = [(float(u[r, c]), float(x), float(y), {"map_value": int(classes[r, c])})
                             for r, c, x, y in zip(rows[order], cols[order], np.atleast_1d(xs), np.atleast_1d(ys))]
                    candidates += spread(block, n, min_distance)
                chosen = spread(candidates, n, min_distance)
                crs = src.crs
        finally:
            for path in leftovers:
                Path(path).unlink(missing_ok=True)
        if len(chosen) < n:
            logger.warning("only %d classified pixels lie at least %g apart; %d points written", len(chosen),
                           min_distance, len(chosen))
        points = [{"id": i, "x": x, "y": y, "uncertainty": round(u, 6), "map_value": e["map_value"],
                   "map_class": names.get(e["map_value"], ""), "class": ""}
                  for i, (u, x, y, e) in enumerate(chosen, start=1)]
        write_points(out, crs, points, SCHEMA)
    return points
