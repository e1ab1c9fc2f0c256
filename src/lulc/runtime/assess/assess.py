"""``lulc assess MAP REFERENCE``: accuracy and class areas with confidence intervals.

The map is streamed once to count its classes (the strata weights W_i), the reference is
counted against it (:mod:`lulc.runtime.assess.reference`), and the estimators of
:mod:`lulc.runtime.assess.estimators` turn the counts into user's and producer's accuracy,
overall accuracy and class areas, each with its standard error and 95 % interval.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lulc.runtime.assess.estimators import Z95, Estimates, olofsson, stehman
from lulc.runtime.assess.maps import count_pixels, map_classes, open_map, pixel_area_ha
from lulc.runtime.assess.reference import Strata, Tally, tally
from lulc.runtime.core.errors import InputRasterError
from lulc.runtime.io.outputs import check_outputs, locked_all, replace_atomically, temp_path
from lulc.runtime.io.vector import parse_crs

logger = logging.getLogger(__name__)

ESTIMATORS = {"olofsson": "Olofsson et al. (2014) stratified estimator, strata = map classes",
              "stehman": "Stehman (2014) estimator for strata different from the map classes"}


@dataclass
class Assessment:
    """Estimates for one map and reference sample, with what they are based on."""

    map: str
    reference: str
    estimator: str
    classes: list[str]
    estimates: Estimates
    mapped_ha: np.ndarray  # per class
    total_ha: float  # the area the proportions refer to
    map_samples: np.ndarray  # sample units per map class (n_i·)
    reference_samples: np.ndarray  # sample units per reference class (n_·j)
    tally: Tally


def assess_map(map_path: str | os.PathLike, reference: str | os.PathLike, class_field: str | None = None,
               strata_path: str | os.PathLike | None = None, crs: str | None = None, x_field: str = "x",
               y_field: str = "y", labels_from: str | os.PathLike | None = None) -> Assessment:
    """Estimate accuracy and areas of ``map_path`` from the sample in ``reference``."""
    with open_map(map_path) as src:
        classes = map_classes(src)
        area_ha = pixel_area_ha(src)
        pixels = count_pixels(src)
        mapped = pixels[classes.values]
        if not mapped.sum():
            raise InputRasterError(f"{Path(map_path).name} has no classified pixel")
        given_crs = parse_crs(crs) if crs else None
        if strata_path is None:
            counted = tally(src, reference, class_field, None, given_crs, x_field, y_field, labels_from)
            per_stratum = counted.counts.sum(axis=(1, 2))
            _every_stratum_sampled(per_stratum, mapped, list(classes.names.values()), "map class")
            # strata are the map classes: stratum h's units all have map class h
            estimates, total_ha, name = olofsson(counted.counts.sum(axis=0), mapped), float(mapped.sum() * area_ha), "olofsson"
        else:
            with open_map(strata_path, "strata raster") as strata_src:
                if strata_src.crs is None:
                    raise InputRasterError(f"strata raster {strata_path} has no CRS")
                strata_pixels = count_pixels(strata_src)
                if strata_src.nodata is not None:
                    strata_pixels[int(strata_src.nodata)] = 0
                values = [int(v) for v in np.flatnonzero(strata_pixels)]
                strata = Strata(strata_src, values)
                counted = tally(src, reference, class_field, strata, given_crs, x_field, y_field, labels_from)
                _every_stratum_sampled(counted.counts.sum(axis=(1, 2)), strata_pixels[values], [str(v) for v in values],
                                       "stratum")
                estimates = stehman(counted.counts, strata_pixels[values])
                total_ha = float(strata_pixels[values].sum() * pixel_area_ha(strata_src))
                name = "stehman"
    for note in counted.notes:
        logger.info(note)
    both = counted.counts.sum(axis=0)
    return Assessment(str(map_path), str(reference), name, list(classes.names.values()), estimates, mapped * area_ha,
                      total_ha, both.sum(axis=1), both.sum(axis=0), counted)


def _every_stratum_sampled(samples: np.ndarray, pixels: np.ndarray, names: list[str], what: str) -> None:
    """The estimators need a sample in every stratum that has pixels; two for a variance."""
    empty = [n for n, s, p in zip(names, samples, pixels) if p and not s]
    if empty:
        raise InputRasterError(f"{what} {empty[0]!r} covers {pixels[names.index(empty[0])]} px but has no reference sample"
                               f"{f' (nor {len(empty) - 1} more)' if len(empty) > 1 else ''}; the stratified estimator "
                               "needs a sample in every stratum: add samples there (lulc sample-design draws them)")
    few = [n for n, s, p in zip(names, samples, pixels) if p > 1 and s == 1]  # one pixel, one sample: a census
    if few:
        logger.warning("%s %s has a single reference sample: no standard error can be estimated for the figures it "
                       "enters (shown as nan); 20 or more per stratum are advised", what, few[0])


def _ci(value: float, se: float) -> list[float]:
    return [value - Z95 * se, value + Z95 * se]


def _number(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def to_json(a: Assessment) -> dict:
    """The figures as a JSON-ready dict (NaN as null)."""
    e = a.estimates
    classes = {}
    for k, name in enumerate(a.classes):
        area, area_se = e.area_proportion[k] * a.total_ha, e.area_proportion_se[k] * a.total_ha
        classes[name] = {
            "users_accuracy": _number(e.users[k]), "users_accuracy_se": _number(e.users_se[k]),
            "users_accuracy_ci95": [_number(v) for v in _ci(e.users[k], e.users_se[k])],
            "producers_accuracy": _number(e.producers[k]), "producers_accuracy_se": _number(e.producers_se[k]),
            "producers_accuracy_ci95": [_number(v) for v in _ci(e.producers[k], e.producers_se[k])],
            "area_proportion": _number(e.area_proportion[k]), "area_proportion_se": _number(e.area_proportion_se[k]),
            "area_ha": _number(area), "area_ha_se": _number(area_se), "area_ha_ci95": [_number(v) for v in _ci(area, area_se)],
            "mapped_area_ha": float(a.mapped_ha[k]), "n_samples": int(a.map_samples[k]),
            "n_reference": int(a.reference_samples[k]),
        }
    t = a.tally
    return {
        "map": a.map, "reference": a.reference, "estimator": ESTIMATORS[a.estimator], "confidence": 0.95, "z": Z95,
        "overall_accuracy": _number(e.overall), "overall_accuracy_se": _number(e.overall_se),
        "overall_accuracy_ci95": [_number(v) for v in _ci(e.overall, e.overall_se)],
        "total_area_ha": a.total_ha, "n_samples": t.used,
        "skipped": {"outside_map": t.outside, "on_nodata": t.on_nodata, "without_class": t.unlabelled,
                    "outside_strata": t.off_strata},
        "notes": t.notes, "classes": classes,
        "error_matrix_area_proportions": {"rows_map_columns_reference": a.classes,
                                          "values": [[_number(v) for v in row] for row in e.matrix]},
    }


def write_json(figures: dict, path: str | os.PathLike, inputs: list, overwrite: bool) -> None:
    """``figures`` to ``path`` under the output rules (checked, locked, staged, renamed)."""
    out = check_outputs({"--json": path}, inputs, overwrite=overwrite)["--json"]
    with locked_all([out]):
        staged = temp_path(out, "partial")
        try:
            staged.write_text(json.dumps(figures, indent=2))
            replace_atomically(staged, out)
        finally:
            staged.unlink(missing_ok=True)


def format_table(a: Assessment) -> str:
    """The table ``lulc assess`` prints: per class, then overall, then the error matrix."""
    e, t = a.estimates, a.tally
    width = max(12, *(len(c) for c in a.classes))

    def pm(value: float, se: float, scale: float = 1.0, digits: int = 3) -> str:
        if not np.isfinite(value):
            return "n/a"
        half = f"{Z95 * se * scale:.{digits}f}" if np.isfinite(se) else "nan"
        return f"{value * scale:.{digits}f} ± {half}"

    skipped = f"; left out: {t.skipped()}" if t.skipped() else ""
    lines = [f"{ESTIMATORS[a.estimator]}; {t.used} reference samples{skipped}",
             "(± is the 95 % confidence interval, 1.96 standard errors)", "",
             f"{'class':<{width}}  {'n':>5}  {'mapped ha':>12}  {'area ha':>24}  {'user acc':>15}  {'producer acc':>15}"]
    for k, name in enumerate(a.classes):
        lines.append(f"{name:<{width}}  {int(a.map_samples[k]):>5}  {a.mapped_ha[k]:>12.1f}  "
                     f"{pm(e.area_proportion[k], e.area_proportion_se[k], a.total_ha, 1):>24}  "
                     f"{pm(e.users[k], e.users_se[k]):>15}  {pm(e.producers[k], e.producers_se[k]):>15}")
    lines += ["", f"overall accuracy {pm(e.overall, e.overall_se)} (SE {e.overall_se:.3f})", "",
              "error matrix in area proportions (rows: map, columns: reference)",
              f"{'':<{width}}  " + "  ".join(f"{c[:8]:>8}" for c in a.classes)]
    for name, row in zip(a.classes, e.matrix):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>8.4f}" for v in row))
    return "\n".join(lines)
