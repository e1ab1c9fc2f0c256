"""Accuracy figures checked against values worked out by hand on a small confusion matrix."""
from __future__ import annotations

import numpy as np
import pytest

from lulc.training.metrics import confusion_matrix, format_table, report


def test_confusion_matrix_skips_ignored_pixels():
    truth = np.array([0, 0, 1, 1, 2, 255, 255], dtype=np.uint8)
    pred = np.array([0, 1, 1, 1, 0, 2, 0], dtype=np.uint8)
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_report_matches_hand_computation():
    # rows = reference, columns = prediction
    cm = np.array([[50, 10], [5, 35]])
    r = report(cm, ["a", "b"])
    oa = 85 / 100
    pe = (55 * 60 + 45 * 40) / 100**2  # chance agreement from the marginals
    assert r["overall_accuracy"] == pytest.approx(oa, abs=1e-4)
    assert r["kappa"] == pytest.approx((oa - pe) / (1 - pe), abs=1e-4)
    pa, ra = 50 / 55, 50 / 60
    pb, rb = 35 / 45, 35 / 40
    assert r["per_class"]["a"]["precision"] == pytest.approx(pa, abs=1e-4)
    assert r["per_class"]["b"]["recall"] == pytest.approx(rb, abs=1e-4)
    f1a, f1b = 2 * pa * ra / (pa + ra), 2 * pb * rb / (pb + rb)
    assert r["macro_f1"] == pytest.approx((f1a + f1b) / 2, abs=1e-4)
    assert r["micro_f1"] == r["overall_accuracy"]
    assert r["pixels"] == 100 and r["per_class"]["a"]["support"] == 60


def test_absent_class_does_not_dilute_macro_f1():
    cm = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 0]])
    r = report(cm, ["a", "b", "never"])
    assert r["macro_f1"] == 1.0
    assert r["per_class"]["never"]["support"] == 0


def test_empty_matrix_and_table():
    r = report(np.zeros((2, 2), dtype=int), ["a", "b"])
    assert r["overall_accuracy"] == 0.0 and r["pixels"] == 0
    table = format_table(report(np.array([[3, 1], [0, 4]]), ["forest", "water"]))
    assert "forest" in table.splitlines()[2] and "0.875" in table.splitlines()[0]
