"""Channels-first twins: lulc export writes the ONNX model without its layout transposes, the
runtime runs it with channels-first packing and blending, and every map is the same as the
channels-last model's, byte for byte."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import BANDS, infer, pixels, synthetic_scene, write_raster
from lulc.export.layout import channels_first
from lulc.runtime.core.bundle import Bundle


@pytest.fixture
def channels_last(trained_bundle, tmp_path) -> Path:
    """The session bundle without its channels-first twin: what older exports wrote."""
    copy = tmp_path / "nhwc"
    shutil.copytree(trained_bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    del manifest["artifacts"]["onnx-nchw"]
    (copy / "bundle.json").write_text(json.dumps(manifest))
    (copy / "model.nchw.onnx").unlink()
    return copy


def test_export_records_a_gated_channels_first_twin(trained_bundle):
    m = Bundle.load(trained_bundle).manifest
    twin = m.artifacts["onnx-nchw"]
    assert twin.path == "model.nchw.onnx" and twin.details["layout"] == "nchw" and twin.details["derived_from"] == "onnx"
    assert twin.parity["max_abs_diff"] <= 1e-6 and twin.parity["argmax_agreement"] == 1.0
    graph = onnx.load(str(trained_bundle / "model.nchw.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == len(BANDS)
    assert not [n for n in graph.node if n.op_type in ("Transpose", "Softmax")]  # layout transposes gone, softmax expanded


@pytest.mark.parametrize("extra", [(), ("--tta", "d4"), ("--block-px", "96", "--uncertainty", "margin")])
def test_maps_equal_the_channels_last_models(trained_bundle, channels_last, tmp_path, extra):
    image = write_raster(tmp_path / "in.tif", synthetic_scene(150, 170, seed=12)[0], descriptions=BANDS)
    first, last = tmp_path / "nchw.tif", tmp_path / "nhwc.tif"
    result = infer(trained_bundle, image, "-o", first, "--probabilities", "--json", *extra)
    assert result.returncode == 0, result.stderr
    assert infer(channels_last, image, "-o", last, "--probabilities", *extra).returncode == 0
    np.testing.assert_array_equal(pixels(first), pixels(last))
    ensemble = tmp_path / "mixed.tif"  # members of both layouts in one ensemble
    assert infer(trained_bundle, channels_last, image, "-o", ensemble, "--probabilities", *extra).returncode == 0
    np.testing.assert_array_equal(pixels(ensemble)[0], pixels(last)[0])


def test_a_graph_without_layout_transposes_has_no_twin(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 8, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert channels_first(tmp_path / "m.onnx", tmp_path / "twin.onnx") is False
    assert not (tmp_path / "twin.onnx").exists()
