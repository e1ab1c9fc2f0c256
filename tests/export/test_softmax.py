"""The class-axis softmax written out as elementwise ops: the same probabilities as the
softmax formula, only where onnxruntime's Softmax would transpose, and in every artefact an
export makes from ``model.onnx``."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lulc.export.softmax import expand_softmax


def conv_softmax(path, axis: int, opset: int, layout_transpose: bool = False) -> np.ndarray:
    """A 1x1 conv from 3 bands to 5 class scores and a softmax along ``axis``, as tf2onnx
    writes a Keras head: returns the conv weights."""
    weights = np.random.default_rng(0).normal(size=(5, 3, 1, 1)).astype(np.float32) * 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 7])
    out_shape = [None, 6, 7, 5] if layout_transpose else [None, 5, 6, 7]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    nodes = [helper.make_node("Conv", ["x", "w"], ["scores"], "head"),
             helper.make_node("Softmax", ["scores"], ["p" if layout_transpose else "y"], "probs", axis=axis)]
    if layout_transpose:
        nodes.append(helper.make_node("Transpose", ["p"], ["y"], "to_nhwc", perm=[0, 2, 3, 1]))
    graph = helper.make_graph(nodes, "head", [x], [y], [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return weights


def run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [13, 17, 18])  # ReduceMax takes its axes as an input from opset 18
@pytest.mark.parametrize("axis", [1, -3])
def test_a_channel_softmax_becomes_the_formula(tmp_path, opset, axis):
    path = tmp_path / "m.onnx"
    weights = conv_softmax(path, axis, opset, layout_transpose=True)
    assert expand_softmax(path) == 1
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Softmax" not in ops and ops[-1] == "Transpose"
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 7)).astype(np.float32)
    z = np.einsum("kc,nchw->nkhw", weights[:, :, 0, 0].astype(np.float64), x.astype(np.float64))
    # softmax_k(z) = exp(z_k - max_j z_j) / sum_i exp(z_i - max_j z_j), along the class axis
    e = np.exp(z - z.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)).transpose(0, 2, 3, 1)
    got = run(path, x)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got.sum(axis=-1) - 1).max() < 1e-6


def test_large_scores_do_not_overflow(tmp_path):
    path = tmp_path / "m.onnx"
    conv_softmax(path, 1, 17)
    expand_softmax(path)
    x = np.full((1, 3, 6, 7), 200.0, np.float32)  # scores in the thousands: exp alone would overflow
    probs = run(path, x)
    assert np.isfinite(probs).all() and np.abs(probs.sum(axis=1) - 1).max() < 1e-6


@pytest.mark.parametrize("axis", [-1, 3])
def test_a_last_axis_softmax_is_left_alone(tmp_path, axis):
    path = tmp_path / "m.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6, 7, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6, 7, 5])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    before = path.read_bytes()
    assert expand_softmax(path) == 0
    assert path.read_bytes() == before


def test_opsets_before_13_are_left_alone(tmp_path):
    """Softmax there means softmax over all axes from ``axis`` on, flattened: not this rewrite."""
    path = tmp_path / "m.onnx"
    conv_softmax(path, 1, 11)
    before = path.read_bytes()
    assert expand_softmax(path) == 0
    assert path.read_bytes() == before
