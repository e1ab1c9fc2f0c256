"""The bundle schema: version-1 bundles (as lulc wrote them before version 2) upgrade on load,
the fields the runtime reads inside details and provenance are typed, and a version this
lulc does not know is one line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import BANDS, cli_fails, synthetic_scene, write_raster
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError
from lulc.runtime.core.manifest import SCHEMA_VERSION, Manifest
from lulc.runtime.core.upgrade import upgrade

V1 = Path(__file__).with_name("data") / "bundle_v1.json"  # written by lulc train + export before version 2


def test_a_version_1_manifest_written_by_lulc_upgrades():
    raw = json.loads(V1.read_text())
    assert raw["schema_version"] == 1
    m = Manifest.model_validate(upgrade(raw, V1))
    assert m.schema_version == SCHEMA_VERSION == 2
    assert m.artifacts["onnx"].details["precision"] == "fp32" and m.artifacts["onnx"].details["opset"] == 17
    assert m.provenance["label_values"] == [0, 1, 2] and m.provenance["config"]["tile"] == raw["provenance"]["config"]["tile"]
    written = json.loads(m.model_dump_json())
    assert written["artifacts"]["keras"]["details"] == {}  # unset typed fields are not written as nulls
    assert {k: v for k, v in written["provenance"].items()} == raw["provenance"]
    assert json.loads(V1.read_text()) == raw  # the upgrade did not touch its input


def test_precision_is_filled_in_for_version_1_onnx_artefacts():
    raw = json.loads(V1.read_text())
    raw["artifacts"]["onnx-int8"] = {**raw["artifacts"]["onnx"], "path": "model.int8.onnx", "details": {}}
    del raw["artifacts"]["onnx"]["details"]["precision"]
    m = Manifest.model_validate(upgrade(raw, V1))
    assert m.artifacts["onnx"].details["precision"] == "fp32" and m.artifacts["onnx-int8"].details["precision"] == "int8"


def test_a_version_1_bundle_runs_and_is_saved_as_version_2(bundle_copy, tmp_path):
    image = write_raster(tmp_path / "in.tif", synthetic_scene(64, 80, seed=3)[0], descriptions=BANDS)
    lulc_infer = str(Path(sys.executable).with_name("lulc-infer"))
    assert subprocess.run([lulc_infer, bundle_copy, image, "-o", tmp_path / "v2.tif", "--no-progress"]).returncode == 0
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["schema_version"] = 1
    manifest["artifacts"]["onnx"]["details"].pop("precision", None)
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    result = subprocess.run([lulc_infer, bundle_copy, image, "-o", tmp_path / "v1.tif", "--no-progress", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["precision"] == "fp32"
    with rasterio.open(tmp_path / "v1.tif") as a, rasterio.open(tmp_path / "v2.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    Bundle.load(bundle_copy).save()
    assert json.loads((bundle_copy / "bundle.json").read_text())["schema_version"] == 2


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["artifacts"]["onnx"]["details"].update(precision="fp8"), "artifacts.onnx.details.precision"),
    (lambda m: m["artifacts"]["onnx"]["details"].update(stride="2"), "artifacts.onnx.details.stride"),
    (lambda m: m["artifacts"]["onnx"]["details"].update(context_px=-1), "artifacts.onnx.details.context_px"),
    (lambda m: m["provenance"].update(label_values=["forest"]), "provenance.label_values"),
    (lambda m: m.update(schema_version=3), "schema version 3; this lulc reads versions 1 to 2"),
    (lambda m: m.update(schema_version="2"), "schema version '2'"),
])
def test_wrong_types_inside_the_records_are_one_line(bundle_copy, tmp_path, edit, where):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    edit(manifest)
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=where.replace(".", r"\.").replace("'", "'")):
        Bundle.load(bundle_copy)
    image = write_raster(tmp_path / "in.tif", synthetic_scene(32, 32, seed=1)[0], descriptions=BANDS)
    cli_fails(["infer", bundle_copy, image, "-o", tmp_path / "m.tif", "--no-progress"], where.split(";")[0])


def test_version_1_bundle_folder_copies_keep_working(trained_bundle, tmp_path):
    """The session fixture bundle is version 2 (written now); a copy survives a round trip."""
    copy = tmp_path / "b"
    shutil.copytree(trained_bundle, copy)
    assert Bundle.load(copy).manifest.schema_version == 2
