"""Each bad input: one line, exit code 1, no traceback, nothing left at the output path."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.cli import main


@pytest.fixture
def good(tmp_path):
    image, _ = synthetic_scene(40, 50)
    return write_raster(tmp_path / "good.tif", image, descriptions=BANDS)


def _fails(args, match):
    result = CliRunner().invoke(main, ["infer", *map(str, args), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert match in lines[0], lines[0]
    return lines[0]


def _no_output_left(folder, name):
    assert not [p for p in folder.iterdir() if name in p.name]


def test_wrong_band_count(trained_bundle, tmp_path):
    image, _ = synthetic_scene(40, 50)
    path = write_raster(tmp_path / "3b.tif", image[:3])
    _fails([trained_bundle, path, "-o", tmp_path / "out.tif"], "has 3 bands but the model expects 4")
    _no_output_left(tmp_path, "out.tif")


def test_wrong_band_names(trained_bundle, tmp_path):
    image, _ = synthetic_scene(40, 50)
    path = write_raster(tmp_path / "swapped.tif", image, descriptions=["B03", "B02", "B04", "B08"])
    _fails([trained_bundle, path, "-o", tmp_path / "out.tif"], "band names")


def test_no_crs(trained_bundle, tmp_path):
    image, _ = synthetic_scene(40, 50)
    path = write_raster(tmp_path / "nocrs.tif", image, crs=None, descriptions=BANDS)
    _fails([trained_bundle, path, "-o", tmp_path / "out.tif"], "has no CRS")
    _no_output_left(tmp_path, "out.tif")


def test_missing_and_unreadable_input(trained_bundle, tmp_path):
    _fails([trained_bundle, tmp_path / "absent.tif", "-o", tmp_path / "out.tif"], "not found")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00 this is not a tiff")
    _fails([trained_bundle, junk, "-o", tmp_path / "out.tif"], "cannot read")
    _no_output_left(tmp_path, "out.tif")


def test_existing_output_needs_overwrite(trained_bundle, good, tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    _fails([trained_bundle, good, "-o", out], "--overwrite")
    assert out.read_bytes() == b"precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders; see the two tests below")
def test_unwritable_folder(trained_bundle, good, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    _fails([trained_bundle, good, "-o", locked / "out.tif"], "not writable")


def test_output_folder_missing(trained_bundle, good, tmp_path):
    _fails([trained_bundle, good, "-o", tmp_path / "no" / "such" / "out.tif"], "does not exist")


def test_unwritable_output_as_root(trained_bundle, good, tmp_path):
    """An output path that is a folder cannot be written by anyone, root included."""
    target = tmp_path / "adir.tif"
    target.mkdir()
    _fails([trained_bundle, good, "-o", target, "--overwrite"], "is a folder")


def test_bundle_without_manifest(good, tmp_path):
    empty = tmp_path / "notabundle"
    empty.mkdir()
    _fails([empty, good, "-o", tmp_path / "out.tif"], "no bundle.json")
    _no_output_left(tmp_path, "out.tif")


def test_failure_mid_run_leaves_nothing(trained_bundle, good, tmp_path, monkeypatch):
    from lulc.runtime import pipeline
    from lulc.runtime.core.errors import InputRasterError

    def boom(*args, **kwargs):
        raise InputRasterError("simulated read failure at window col 0 row 0")

    monkeypatch.setattr(pipeline, "read_padded", boom)
    _fails([trained_bundle, good, "-o", tmp_path / "out.tif"], "simulated read failure")
    _no_output_left(tmp_path, "out.tif")
    assert np.all([not p.name.startswith(".out.tif") for p in tmp_path.iterdir()])
