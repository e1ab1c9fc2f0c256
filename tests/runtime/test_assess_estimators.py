"""The area and accuracy estimators against the published formulas, worked out here by hand
(scalar arithmetic on a small written-down example, not the code under test), and against an
independent simulation: on a map with known true class areas, 1,000 seeded stratified samples
drawn by lulc's own sampler give 95 % intervals that cover the truth in 93-97 % of runs."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import rasterio

from lulc.runtime.assess.design import draw_points
from lulc.runtime.assess.estimators import olofsson, stehman
from lulc.runtime.assess.maps import MapClasses

# ---- Olofsson et al. (2014): strata = map classes ----------------------------------------------
#: mapped pixels N_i of map classes A, B, C (W = 0.2, 0.3, 0.5)
MAPPED = [20_000, 30_000, 50_000]
#: sample counts n_ij: rows map class, columns reference class
COUNTS = [[45, 3, 2],
          [4, 40, 6],
          [1, 5, 94]]


def test_olofsson_against_the_papers_equations_by_hand():
    W = [m / sum(MAPPED) for m in MAPPED]
    n_i = [sum(row) for row in COUNTS]  # 50, 50, 100
    q = 3
    # eq. (4): p_ij = W_i n_ij / n_i.
    p = [[W[i] * COUNTS[i][j] / n_i[i] for j in range(q)] for i in range(q)]
    # eq. (1): O = sum_j p_jj  =  0.2*45/50 + 0.3*40/50 + 0.5*94/100 = 0.18 + 0.24 + 0.47
    assert math.isclose(0.18 + 0.24 + 0.47, sum(p[j][j] for j in range(q)))
    overall = 0.89
    # eq. (2): U_i = p_ii / p_i. = n_ii / n_i.
    users = [45 / 50, 40 / 50, 94 / 100]
    # eq. (9): p_.j = sum_i W_i n_ij / n_i.
    area = [sum(W[i] * COUNTS[i][j] / n_i[i] for i in range(q)) for j in range(q)]
    assert math.isclose(area[0], 0.2 * 45 / 50 + 0.3 * 4 / 50 + 0.5 * 1 / 100)
    # eq. (3): P_j = p_jj / p_.j
    producers = [p[j][j] / area[j] for j in range(q)]
    # eq. (5): V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)
    v_overall = sum(W[i] ** 2 * users[i] * (1 - users[i]) / (n_i[i] - 1) for i in range(q))
    # eq. (6): V(U_i) = U_i (1 - U_i) / (n_i. - 1)
    v_users = [users[i] * (1 - users[i]) / (n_i[i] - 1) for i in range(q)]
    # eq. (10): S(p_.k)^2 = sum_i W_i^2 (n_ik/n_i.)(1 - n_ik/n_i.) / (n_i. - 1)
    v_area = [sum(W[i] ** 2 * (COUNTS[i][k] / n_i[i]) * (1 - COUNTS[i][k] / n_i[i]) / (n_i[i] - 1) for i in range(q))
              for k in range(q)]
    # eq. (7): V(P_j) = 1/N_.j^2 [ N_j.^2 (1-P_j)^2 U_j(1-U_j)/(n_j.-1)
    #                               + P_j^2 sum_{i != j} N_i.^2 (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i.-1) ]
    v_prod = []
    for j in range(q):
        n_ref = sum(MAPPED[i] / n_i[i] * COUNTS[i][j] for i in range(q))  # N_.j estimated
        first = MAPPED[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
        second = producers[j] ** 2 * sum(MAPPED[i] ** 2 * (COUNTS[i][j] / n_i[i]) * (1 - COUNTS[i][j] / n_i[i]) / (n_i[i] - 1)
                                         for i in range(q) if i != j)
        v_prod.append((first + second) / n_ref**2)

    est = olofsson(np.array(COUNTS), np.array(MAPPED))
    assert est.overall == pytest.approx(overall, abs=1e-12)
    assert est.overall_se == pytest.approx(math.sqrt(v_overall), rel=1e-12)
    np.testing.assert_allclose(est.users, users, rtol=1e-12)
    np.testing.assert_allclose(est.users_se, np.sqrt(v_users), rtol=1e-12)
    np.testing.assert_allclose(est.producers, producers, rtol=1e-12)
    np.testing.assert_allclose(est.producers_se, np.sqrt(v_prod), rtol=1e-12)
    np.testing.assert_allclose(est.area_proportion, area, rtol=1e-12)
    np.testing.assert_allclose(est.area_proportion_se, np.sqrt(v_area), rtol=1e-12)
    np.testing.assert_allclose(est.matrix, p, rtol=1e-12)
    # a figure worked out on paper: SE(O)^2 = .04*.9*.1/49 + .09*.8*.2/49 + .25*.94*.06/99
    assert est.overall_se == pytest.approx(math.sqrt(0.0036 / 49 + 0.0144 / 49 + 0.0141 / 99), rel=1e-12)


def test_a_stratum_with_one_sample_gives_no_standard_error():
    est = olofsson(np.array([[1, 0], [2, 30]]), np.array([100, 900]))
    assert np.isnan(est.overall_se) and np.isnan(est.users_se[0]) and np.isfinite(est.users_se[1])


def test_a_stratum_sampled_whole_adds_no_variance():
    """Class 0 has 3 pixels and all 3 are in the sample: a census (finite population correction
    1 - 3/3 = 0), so only class 1's sampling enters the variances: by hand,
    V(O) = W_1^2 U_1 (1 - U_1)/(n_1 - 1) with W_1 = 997/1000, U_1 = 28/30."""
    est = olofsson(np.array([[2, 1], [2, 28]]), np.array([3, 997]))
    assert est.overall_se == pytest.approx(math.sqrt(0.997**2 * (28 / 30) * (2 / 30) / 29), rel=1e-12)
    assert est.users_se[0] == 0.0
    # S(p_.0)^2 = W_1^2 (2/30)(28/30)/29: class 1's samples that are class 0 in reality
    assert est.area_proportion_se[0] == pytest.approx(math.sqrt(0.997**2 * (2 / 30) * (28 / 30) / 29), rel=1e-12)


# ---- Stehman (2014): strata different from the map classes ----------------------------------------

#: (stratum, map class, reference class) of each sample unit, and the strata sizes N_h
UNITS = ([(0, 0, 0)] * 12 + [(0, 0, 1)] * 3 + [(0, 1, 1)] * 4 + [(0, 2, 2)] * 1 +
         [(1, 1, 1)] * 9 + [(1, 2, 1)] * 2 + [(1, 2, 2)] * 7 + [(1, 0, 2)] * 2)
STRATA = [4_000, 16_000]


def test_stehman_against_the_unit_level_formulas():
    """Every estimate rebuilt from the sample units themselves: stratum means and (n - 1)
    variances and covariances (statistics module), then Stehman's totals and ratios."""
    N = sum(STRATA)
    by_h = [[u for u in UNITS if u[0] == h] for h in range(2)]

    def total(y) -> float:  # Y = sum_h N_h mean_h(y)
        return sum(STRATA[h] * statistics.fmean([y(u) for u in by_h[h]]) for h in range(2))

    def var_total(y) -> float:  # sum_h N_h^2 (1 - n_h/N_h) s_yh^2 / n_h
        return sum(STRATA[h] ** 2 * (1 - len(by_h[h]) / STRATA[h]) * statistics.variance([y(u) for u in by_h[h]])
                   / len(by_h[h]) for h in range(2))

    def ratio(y, x) -> tuple[float, float]:  # R = Y/X, V(R) = X^-2 sum_h N_h^2 (1-f_h)(s_y^2 + R^2 s_x^2 - 2 R s_xy)/n_h
        r = total(y) / total(x)
        v = 0.0
        for h in range(2):
            ys, xs = [y(u) for u in by_h[h]], [x(u) for u in by_h[h]]
            s = statistics.variance(ys) + r**2 * statistics.variance(xs) - 2 * r * statistics.covariance(xs, ys)
            v += STRATA[h] ** 2 * (1 - len(ys) / STRATA[h]) * s / len(ys)
        return r, math.sqrt(max(v, 0.0)) / total(x)  # 0 up to rounding where y = R x in every unit

    counts = np.zeros((2, 3, 3), np.int64)
    for h, i, j in UNITS:
        counts[h, i, j] += 1
    est = stehman(counts, np.array(STRATA))
    correct = lambda u: float(u[1] == u[2])  # noqa: E731
    assert est.overall == pytest.approx(total(correct) / N, rel=1e-12)
    assert est.overall_se == pytest.approx(math.sqrt(var_total(correct)) / N, rel=1e-12)
    for k in range(3):
        hit = lambda u, k=k: float(u[1] == k and u[2] == k)  # noqa: E731
        ua = ratio(hit, lambda u, k=k: float(u[1] == k))
        pa = ratio(hit, lambda u, k=k: float(u[2] == k))
        ref_k = lambda u, k=k: float(u[2] == k)  # noqa: E731
        assert (est.users[k], est.users_se[k]) == pytest.approx(ua, rel=1e-12)
        assert (est.producers[k], est.producers_se[k]) == pytest.approx(pa, rel=1e-12)
        assert est.area_proportion[k] == pytest.approx(total(ref_k) / N, rel=1e-12)
        assert est.area_proportion_se[k] == pytest.approx(math.sqrt(var_total(ref_k)) / N, rel=1e-12)


def test_stehman_on_map_class_strata_is_olofsson():
    """With the map classes as strata and strata far larger than the sample (no finite
    population correction to speak of), the general estimator gives the paper's figures."""
    counts = np.zeros((3, 3, 3))
    for i in range(3):
        counts[i, i] = COUNTS[i]
    big = np.array(MAPPED) * 10**9
    a, b = stehman(counts, big), olofsson(np.array(COUNTS), big)
    for field in ("overall", "overall_se", "users", "users_se", "producers", "producers_se", "area_proportion",
                  "area_proportion_se", "matrix"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-6, err_msg=field)


# ---- coverage of the 95 % intervals -----------------------------------------------------------

@pytest.mark.slow
def test_95_percent_intervals_cover_the_true_areas_in_93_to_97_percent_of_1000_samples(tmp_path):
    """A 300 x 300 truth of three classes, a map that confuses them at class-dependent rates,
    1,000 stratified samples (60/60/80 per map class) drawn by lulc's sampler, references read
    from the truth: each class's area interval and the overall accuracy interval must cover
    their true values in 93-97 % of the runs."""
    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:300, 0:300]
    truth = np.where(np.hypot(yy - 90, xx - 110) < 70, 0, np.where(xx + yy > 380, 1, 2)).astype(np.uint8)
    wrong = rng.random(truth.shape) < np.array([0.10, 0.25, 0.05])[truth]
    mapped = np.where(wrong, (truth + rng.integers(1, 3, truth.shape)) % 3, truth).astype(np.uint8)
    path = tmp_path / "map.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(0, 3000, 10, 10), tiled=True, blockxsize=128,
                       blockysize=128) as dst:
        dst.write(mapped, 1)
    true_area = np.bincount(truth.ravel(), minlength=3) / truth.size
    true_overall = float((truth == mapped).mean())
    pixels = np.bincount(mapped.ravel(), minlength=3)
    classes = MapClasses({0: "a", 1: "b", 2: "c"})
    covered = np.zeros(4)
    runs = 1000
    with rasterio.open(path) as src:
        for seed in range(runs):
            counts = np.zeros((3, 3), np.int64)
            for point in draw_points(src, classes, np.array([60, 60, 80]), pixels, seed):
                row, col = src.index(point["x"], point["y"])
                counts[point["map_value"], truth[row, col]] += 1
            est = olofsson(counts, pixels)
            covered[:3] += np.abs(est.area_proportion - true_area) <= 1.96 * est.area_proportion_se
            covered[3] += abs(est.overall - true_overall) <= 1.96 * est.overall_se
    rates = covered / runs
    assert ((rates >= 0.93) & (rates <= 0.97)).all(), rates
