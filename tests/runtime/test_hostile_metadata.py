"""Metadata a hostile or careless user controls: class names and colours in bundle.json, the
sample `lulc serve` hands out, and the colour table of a map with probability bands."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import BANDS, cli_fails, synthetic_scene, write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle


@pytest.fixture
def image(tmp_path) -> Path:
    return write_raster(tmp_path / "in.tif", synthetic_scene(64, 64, seed=3)[0], descriptions=BANDS)


@pytest.mark.parametrize("field, value, expected", [
    ("name", "for\x01est", "holds the control character"),
    ("name", "   ", "may not be blank"),
    ("color", [62, 999, 80], "less than or equal to 255"),
])
def test_class_names_and_colours_that_break_sidecars_are_refused_on_load(bundle_copy, image, field, value, expected):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["classes"][1][field] = value
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    out = image.parent / "map.tif"
    line = cli_fails(["infer", bundle_copy, image, "-o", out, "--no-progress"], expected)
    assert "classes.1." + field in line and not out.exists()


def test_sidecars_of_odd_but_printable_names_are_valid_xml(bundle_copy, image):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["classes"][0]["name"] = 'crops & "orchards" <Obstbau>'
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    out = image.parent / "map.tif"
    result = CliRunner().invoke(main, ["infer", str(bundle_copy), str(image), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    aux = ET.parse(out.with_name("map.tif.aux.xml")).getroot()
    assert aux.find(".//CategoryNames/Category").text == 'crops & "orchards" <Obstbau>'
    labels = [e.get("label") for e in ET.parse(out.with_suffix(".qml")).getroot().iter("paletteEntry")]
    assert labels[0] == 'crops & "orchards" <Obstbau>'


def test_a_map_with_probability_bands_keeps_its_colour_table(bundle_copy, image):
    out = image.parent / "map.tif"
    result = CliRunner().invoke(main, ["infer", str(bundle_copy), str(image), "-o", str(out), "--probabilities",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    classes = Bundle.load(bundle_copy).manifest.map_classes
    with rasterio.open(out) as src:
        assert src.count == 1 + len(classes)
        table = src.colormap(1)
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
    assert {c.id: table[c.id] for c in classes} == {c.id: (*c.color, 255) for c in classes}


@pytest.mark.parametrize("sample", ["passwd", "twelve-bands", "png"])
def test_serve_hands_out_only_a_geotiff_with_the_bundles_bands(bundle_copy, tmp_path, sample):
    from PIL import Image

    paths = {"passwd": tmp_path / "passwd", "twelve-bands": tmp_path / "twelve.tif", "png": tmp_path / "scene.png"}
    paths["passwd"].write_text("root:x:0:0:root:/root:/bin/bash\n")
    write_raster(paths["twelve-bands"], np.ones((12, 16, 16), np.uint16))
    Image.new("RGB", (16, 16)).save(paths["png"])
    cli_fails(["serve", bundle_copy, "--sample", paths[sample], "--port", "0"],
              f"is not a GeoTIFF with the bundle's {len(BANDS)} bands")
