"""Area and accuracy estimators for a stratified reference sample, as published.

Map-pixel counts are biased by the map's own errors; a reference sample drawn with a known
design gives unbiased estimates with standard errors. Two estimators, both computed from
sample *counts* (so a reference of millions of labelled pixels costs no more than 300 points):

* :func:`olofsson` — strata are the map classes (the default design). Olofsson, Foody,
  Herold, Stehman, Woodcock & Wulder (2014), "Good practices for estimating area and assessing
  accuracy of land change", Remote Sensing of Environment 148, 42–57: eq. (4) cell proportions
  p̂_ij = W_i n_ij / n_i·, (1) overall accuracy, (2) user's and (3) producer's accuracy, (5)–(7)
  their variances, (9)–(11) area proportions, their standard errors and areas. No finite
  population correction, as in the paper (map strata hold far more pixels than samples), but
  for a stratum sampled whole (a census: no sampling variance).
* :func:`stehman` — strata are anything else (a sample drawn on an older map, on regions).
  Stehman (2014), "Estimating area and map accuracy for stratified random sampling when the
  strata are different from the map classes", International Journal of Remote Sensing 35,
  4923–4939: stratified estimators of totals Ŷ = Σ_h N_h ȳ_h, proportions Ŷ/N, and of ratios
  R̂ = Ŷ/X̂ (user's: x = mapped as k; producer's: x = reference k), with
  V̂(R̂) = X̂⁻² Σ_h N_h² (1 − n_h/N_h)(s²_yh + R̂² s²_xh − 2R̂ s_xyh)/n_h.

Assumptions (both): a stratified *random* sample of pixels, each reference label correct,
and the normal approximation for 95 % intervals (± 1.96 SE), which wants some tens of
samples per stratum. A stratum with fewer than two samples has no variance estimate, so every
standard error it enters is NaN (reported as such, never silently left out).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the normal quantile of a two-sided 95 % interval, as in Olofsson et al. (2014)
Z95 = 1.96


@dataclass
class Estimates:
    """Per class k (reference and map classes share one list) and overall; proportions of the
    mapped area, accuracies as fractions. ``matrix`` is the error matrix in area proportions
    (rows map class, columns reference class)."""

    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area_proportion: np.ndarray
    area_proportion_se: np.ndarray
    matrix: np.ndarray


def _safe_div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b, dtype=np.float64)


def _mapped_only(weights: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """``terms`` of strata with pixels; a stratum with none (a class the map never uses, e.g.
    most transitions of a change map) adds 0, not its undefined 0/0."""
    shape = (-1,) + (1,) * (np.ndim(terms) - 1)
    return np.where(np.reshape(weights, shape) > 0, terms, 0.0)


def olofsson(counts: np.ndarray, mapped: np.ndarray) -> Estimates:
    """Olofsson et al. (2014) from the sample error matrix ``counts`` (n_ij: map class i,
    reference class j; q × q) and the mapped pixels of each class ``mapped`` (N_i·)."""
    n = np.asarray(counts, np.float64)
    big_n = np.asarray(mapped, np.float64)
    w = big_n / big_n.sum()  # W_i
    n_i = n.sum(axis=1)  # n_i·
    p = _mapped_only(w, _safe_div(w[:, None] * n, n_i[:, None]))  # eq. (4)
    diag = np.diag(p)
    overall = float(diag.sum())  # eq. (1)
    users = _safe_div(np.diag(n), n_i)  # eq. (2): p_ii / p_i· = n_ii / n_i·
    area = p.sum(axis=0)  # eq. (9): p̂_·j
    producers = _safe_div(diag, area)  # eq. (3)
    # a stratum whose every pixel is in the sample (n_i· = N_i·: a class of a few pixels) is a
    # census and adds no sampling variance; that is the finite population correction
    # 1 − n_i·/N_i· the paper leaves out because it is ≈ 1 for any stratum that is sampled
    census = n_i >= big_n
    v_users = np.where(census, 0.0, _safe_div(users * (1 - users), n_i - 1))  # eq. (6)
    overall_var = float(np.sum(_mapped_only(w, w**2 * v_users)))  # eq. (5)
    frac = _safe_div(n, n_i[:, None])  # n_ij / n_i·
    # eq. (10): S(p̂_·j)² = Σ_i W_i² (n_ij/n_i·)(1 − n_ij/n_i·)/(n_i· − 1)
    cell_var = _mapped_only(w, np.where(census[:, None], 0.0, _safe_div(frac * (1 - frac), (n_i - 1)[:, None])))
    area_var = np.sum(w[:, None] ** 2 * cell_var, axis=0)
    # eq. (7), with the estimated reference totals N̂_·j = Σ_i (N_i·/n_i·) n_ij
    n_ref = np.sum(_mapped_only(w, _safe_div(big_n[:, None], n_i[:, None]) * n), axis=0)
    q = len(big_n)
    producers_var = np.empty(q)
    for j in range(q):
        others = [i for i in range(q) if i != j]
        first = big_n[j] ** 2 * (1 - producers[j]) ** 2 * v_users[j] if big_n[j] else 0.0
        second = producers[j] ** 2 * np.sum(big_n[others] ** 2 * cell_var[others, j])
        producers_var[j] = _safe_div(first + second, n_ref[j] ** 2)
    return Estimates(overall, float(np.sqrt(overall_var)), users, np.sqrt(v_users), producers, np.sqrt(producers_var),
                     area, np.sqrt(area_var), p)


def stehman(counts: np.ndarray, stratum_pixels: np.ndarray) -> Estimates:
    """Stehman (2014) from the three-way sample counts ``counts`` (n_hij: stratum h, map class
    i, reference class j; H × q × q) and the pixels of each stratum ``stratum_pixels`` (N_h)."""
    keep = np.asarray(stratum_pixels) > 0  # a stratum without pixels holds no population
    n_hij = np.asarray(counts, np.float64)[keep]
    big_n = np.asarray(stratum_pixels, np.float64)[keep]
    n_h = n_hij.sum(axis=(1, 2))
    fpc = 1 - _safe_div(n_h, big_n)
    total = big_n.sum()
    q = n_hij.shape[1]

    def mean_var(ones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per stratum: sample mean and variance (n_h − 1) of a 0/1 variable with ``ones`` ones."""
        mean = _safe_div(ones, n_h)
        return mean, _safe_div(n_h * mean * (1 - mean), n_h - 1)

    def proportion(ones: np.ndarray) -> tuple[float, float]:
        mean, var = mean_var(ones)
        estimate = float(np.sum(big_n * mean) / total)
        return estimate, float(np.sqrt(np.sum(big_n**2 * fpc * _safe_div(var, n_h)) / total**2))

    def ratio(both: np.ndarray, y_ones: np.ndarray, x_ones: np.ndarray) -> tuple[float, float]:
        """R̂ = Ŷ/X̂ for y, x indicators where ``both`` units have x = y = 1 (y implies x here)."""
        y_mean, y_var = mean_var(y_ones)
        x_mean, x_var = mean_var(x_ones)
        cov = _safe_div(both - n_h * x_mean * y_mean, n_h - 1)
        x_total = np.sum(big_n * x_mean)
        r = float(_safe_div(np.sum(big_n * y_mean), x_total))
        # s²_y + R² s²_x − 2R s_xy is the variance of y − Rx: never below 0 but by rounding
        spread = np.maximum(y_var + r**2 * x_var - 2 * r * cov, 0.0)
        var = np.sum(big_n**2 * fpc * _safe_div(spread, n_h)) / x_total**2
        return r, float(np.sqrt(var))

    correct = np.einsum("hii->h", n_hij)
    overall, overall_se = proportion(correct)
    users, users_se, producers, producers_se, area, area_se = (np.empty(q) for _ in range(6))
    for k in range(q):
        hits = n_hij[:, k, k]
        users[k], users_se[k] = ratio(hits, hits, n_hij[:, k, :].sum(axis=1))
        producers[k], producers_se[k] = ratio(hits, hits, n_hij[:, :, k].sum(axis=1))
        area[k], area_se[k] = proportion(n_hij[:, :, k].sum(axis=1))
    matrix = np.array([[proportion(n_hij[:, i, j])[0] for j in range(q)] for i in range(q)])
    return Estimates(overall, overall_se, users, users_se, producers, producers_se, area, area_se, matrix)
