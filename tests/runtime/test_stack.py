"""`lulc stack`: dated rasters -> per-band VRTs + a date-major stack, masks applied, grids checked."""
from __future__ import annotations

import json

import numpy as np
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from conftest import write_raster
from lulc.runtime.cli import main
from lulc.runtime.tools.timestack import parse_date, read_stack_info

DATES = ["20200401", "20200501", "20200601"]


def _dated_folders(root, nodata=-9999, transform=None):
    """Per-date folders of per-band files plus an fmask (4 = cloud on the top-left corner of date 2)."""
    for t, d in enumerate(DATES):
        folder = root / f"S_{d}"
        folder.mkdir(parents=True)
        for b, name in enumerate(["red", "nir"]):
            write_raster(folder / f"S_{d}_{name}.tif", np.full((1, 8, 8), 100 * (t + 1) + b, np.int16),
                         nodata=nodata, transform=transform if t == 2 else None)
        fmask = np.zeros((1, 8, 8), np.uint8)
        if t == 1:
            fmask[0, :3, :3] = 4
        write_raster(folder / f"S_{d}_fmask.tif", fmask, nodata=None, transform=transform if t == 2 else None)
    return root


def test_parse_date_forms():
    assert str(parse_date("LE70350322008118EDC00")) == "2008-04-27"
    assert str(parse_date("S2A_20170216_b3")) == "2017-02-16"
    assert str(parse_date("img_2019-07-03.tif")) == "2019-07-03"


def test_stack_folder_with_mask(tmp_path):
    src = _dated_folders(tmp_path / "in")
    res = CliRunner().invoke(main, ["stack", str(src), "-o", str(tmp_path / "st"), "--bands", "red,nir",
                                    "--mask-band", "fmask"])
    assert res.exit_code == 0, res.output
    info = read_stack_info(tmp_path / "st")
    assert info.dates == ["2020-04-01", "2020-05-01", "2020-06-01"] and info.bands == ["red", "nir"]
    with rasterio.open(info.path) as s:
        assert s.count == 6 and s.nodata == -9999 and s.crs.to_epsg() == 32633
        assert list(s.descriptions) == info.channels and s.descriptions[2] == "20200501_red"
        a = s.read()
    assert (a[2:4, :3, :3] == -9999).all()  # date 2 is cloudy there: both bands masked
    assert (a[2, 5:, 5:] == 200).all() and (a[3, 5:, 5:] == 201).all()
    assert (a[[0, 1, 4, 5]] != -9999).all()
    with rasterio.open(tmp_path / "st" / "nir.vrt") as s:
        assert s.count == 3 and list(s.descriptions) == info.dates
        assert json.loads(s.tags()["LULC_BANDS"]) == ["nir"]


def test_stack_off_grid_needs_align(tmp_path):
    shifted = from_origin(500005, 5800000, 10, 10)
    src = _dated_folders(tmp_path / "in", transform=shifted)
    runner = CliRunner()
    res = runner.invoke(main, ["stack", str(src), "-o", str(tmp_path / "st"), "--mask-band", "fmask"])
    assert res.exit_code == 1 and "--align" in res.output
    res = runner.invoke(main, ["stack", str(src), "-o", str(tmp_path / "st"), "--mask-band", "fmask", "--align"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "st" / "stack.vrt") as s:
        assert s.transform == from_origin(500000, 5800000, 10, 10)
        assert s.descriptions[4] == "20200601_nir" and (s.read(5)[:, 1:7] == 301).all()


def test_stack_user_errors(tmp_path):
    runner = CliRunner()
    write_raster(tmp_path / "nodate.tif", np.ones((1, 4, 4), np.uint16))
    write_raster(tmp_path / "x_20200101.tif", np.ones((1, 4, 4), np.uint16))
    res = runner.invoke(main, ["stack", str(tmp_path / "nodate.tif"), str(tmp_path / "x_20200101.tif"), "-o", str(tmp_path / "s")])
    assert res.exit_code == 1 and "no acquisition date" in res.output
    res = runner.invoke(main, ["stack", str(tmp_path / "x_20200101.tif"), "-o", str(tmp_path / "s")])
    assert res.exit_code == 1 and "at least two dates" in res.output


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stack_output_never_destroys_user_folders(tmp_path):
    """--overwrite replaces a stack lulc wrote, never a folder of the user's files, an input
    folder, or a folder holding the inputs; the new stack appears whole or not at all."""
    src = _dated_folders(tmp_path / "in")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "field.txt").write_text("mine")
    before = _files(tmp_path)
    runner = CliRunner()
    for out in (notes, src, src / "S_20200401", tmp_path):
        result = runner.invoke(main, ["stack", str(src), "-o", str(out), "--mask-band", "fmask", "--overwrite"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert _files(tmp_path) == before
    out = tmp_path / "stack"
    assert runner.invoke(main, ["stack", str(src), "-o", str(out), "--mask-band", "fmask"]).exit_code == 0
    first = _files(out)
    assert runner.invoke(main, ["stack", str(src), "-o", str(out), "--mask-band", "fmask"]).exit_code == 1
    result = runner.invoke(main, ["stack", str(src), "-o", str(out), "--bands", "red", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_stack_info(out).bands == ["red"] and not (out / "nir.vrt").exists() and _files(out) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "notes", "stack"]  # no staging left
