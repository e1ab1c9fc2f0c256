"""`lulc change`: from-to transition raster with legend, hectares per transition, class-list check."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner

from conftest import BANDS, synthetic_scene, write_raster
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


def test_change_between_maps_written_by_lulc_infer(trained_bundle, tmp_path):
    """infer -> change on real output, through the installed scripts: the legend lulc-infer
    writes (on band 1) is the one change reads, so a format change on either side fails here."""
    before, _ = synthetic_scene(48, 64, seed=5)
    after = before.copy()
    after[:, 8:40, 16:48] = np.array([300, 400, 300, 200], np.uint16)[:, None, None]  # water spectra
    bin_dir = Path(sys.executable).parent
    maps = []
    for name, image in (("before", before), ("after", after)):
        src = write_raster(tmp_path / f"{name}.tif", image, descriptions=BANDS)
        maps.append(tmp_path / f"{name}_map.tif")
        proc = subprocess.run([str(bin_dir / "lulc-infer"), str(trained_bundle), str(src), "-o", str(maps[-1]),
                               "--no-progress"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(bin_dir / "lulc"), "change", *map(str, maps), "-o", str(tmp_path / "c.tif")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b, rasterio.open(tmp_path / "c.tif") as c:
        fa, fb, code = a.read(1), b.read(1), c.read(1)
        assert json.loads(c.tags()["CLASS_NAMES"]) == {"0": "crop", "1": "grass", "2": "water"}
    both = (fa < 3) & (fb < 3)
    np.testing.assert_array_equal(code[both], fa[both].astype(int) * 3 + fb[both])
    assert (code[~both] == 255).all()
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert sum(int(r["pixels"]) for r in rows) == both.sum()
    changed = sum(int(r["pixels"]) for r in rows if r["from"] != r["to"])
    assert changed == (both & (fa != fb)).sum() > 0


def test_change_never_overwrites_its_input_maps(tmp_path):
    a = _class_map(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    b = _class_map(tmp_path / "b.tif", np.ones((4, 4), np.uint8))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    runner = CliRunner()
    for args in (["-o", str(a), "--overwrite"], ["-o", str(tmp_path / "c.tif"), "--table", str(b), "--overwrite"],
                 ["-o", str(tmp_path / "c.tif"), "--table", str(tmp_path / "c.tif")]):
        result = runner.invoke(main, ["change", str(a), str(b), *args])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
