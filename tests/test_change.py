"""`lulc change`: from-to transition raster with legend, hectares per transition, class-list check."""
from __future__ import annotations

import csv
import json

import numpy as np
import rasterio
from click.testing import CliRunner
from conftest import write_raster

from lulc.runtime.cli import main

CLASSES = {0: "crop", 1: "forest", 2: "water"}


def _class_map(path, data, classes=CLASSES):
    write_raster(path, data.astype(np.uint8), nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(CLASS_NAMES=json.dumps(classes), CLASS_COLORS=json.dumps({0: [200, 200, 0], 1: [0, 120, 0], 2: [0, 0, 200]}))
    return path


def test_change_raster_and_hectares(tmp_path):
    a = np.zeros((10, 10), np.uint8)
    a[:, 5:] = 1
    b = a.copy()
    b[:2, 5:] = 2  # 10 px forest -> water
    b[9, 9] = 255  # nodata in the second map
    _class_map(tmp_path / "a.tif", a)
    _class_map(tmp_path / "b.tif", b)
    res = CliRunner().invoke(main, ["change", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "c.tif")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "c.tif") as s:
        code = s.read(1)
        assert s.crs.to_epsg() == 32633 and s.transform.a == 10 and s.nodata == 255
        assert s.tags()["TRANSITION_5"] == "forest -> water" and s.colormap(1)[5][:3] == (0, 0, 200)
    assert (code[:2, 5:] == 1 * 3 + 2).all() and code[9, 9] == 255 and (code[:, :5] == 0).all()
    rows = {(r["from"], r["to"]): r for r in csv.DictReader(open(tmp_path / "c.csv"))}
    # 10 m pixels are 0.01 ha
    assert float(rows[("forest", "water")]["hectares"]) == 0.1 and int(rows[("crop", "crop")]["pixels"]) == 50
    assert int(rows[("forest", "forest")]["pixels"]) == 39


def test_change_refuses_different_class_lists(tmp_path):
    _class_map(tmp_path / "a.tif", np.zeros((4, 4)))
    _class_map(tmp_path / "b.tif", np.zeros((4, 4)), {0: "crop", 1: "grass", 2: "water"})
    res = CliRunner().invoke(main, ["change", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "c.tif")])
    assert res.exit_code == 1 and "different class lists" in res.output and "forest" in res.output
    assert not (tmp_path / "c.tif").exists()
