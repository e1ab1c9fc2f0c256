"""Training writes an evaluated bundle; the ONNX export is gated on parity with Keras."""
from __future__ import annotations

import numpy as np
import pytest

from lulc.export import onnx as onnx_export
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import ParityError


def test_training_one_epoch_writes_an_evaluated_bundle(trained_bundle, scene):
    bundle = Bundle.load(trained_bundle)
    prov = bundle.manifest.provenance
    test = prov["metrics"]["test"]
    cm = np.array(test["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == test["pixels"] > 0
    assert 0.0 <= test["overall_accuracy"] <= 1.0
    assert prov["config"]["epochs"] == 1 and prov["config"]["seed"] == 0
    assert len(prov["history"]["loss"]) == 1
    blocks = prov["split"]["blocks"]
    assert not set(blocks["train"]) & set(blocks["test"]) and not set(blocks["train"]) & set(blocks["val"])
    # normalisation statistics are per band and plausible for the synthetic reflectances
    assert all(100 < m < 5000 for m in bundle.manifest.normalization.mean)
    assert not list(trained_bundle.parent.glob(".*partial*"))


def test_onnx_artifact_matches_keras(trained_bundle):
    bundle = Bundle.load(trained_bundle)
    onnx = bundle.manifest.artifacts["onnx"]
    assert onnx.details["opset"] == onnx_export.OPSET
    model, samples, reference = onnx_export.keras_reference(bundle)
    batch = np.concatenate([samples, samples[:1]])  # a batch size never seen in export
    got = onnx_export.run_onnx(bundle.artifact_path("onnx"), batch)
    assert got.shape == (len(batch), *reference.shape[1:])
    assert np.abs(got[: len(samples)] - reference).max() <= onnx_export.FP32_TOLERANCE


def test_corrupted_onnx_is_refused_and_not_written(bundle_copy, monkeypatch):
    """A converter bug that changes one weight must be caught by the gate."""
    import onnx
    from onnx import numpy_helper

    real_convert = onnx_export.convert

    def corrupting_convert(model, path, opset=onnx_export.OPSET):
        real_convert(model, path, opset)
        graph = onnx.load(str(path))
        init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
        weights = numpy_helper.to_array(init).copy()
        weights.flat[: weights.size // 2] *= 1.5
        init.CopyFrom(numpy_helper.from_array(weights, init.name))
        onnx.save(graph, str(path))

    bundle = Bundle.load(bundle_copy)
    (bundle_copy / "model.onnx").unlink()
    del bundle.manifest.artifacts["onnx"]
    bundle.save()
    monkeypatch.setattr(onnx_export, "convert", corrupting_convert)
    with pytest.raises(ParityError, match="max abs probability difference"):
        onnx_export.export_onnx(bundle)
    assert not (bundle_copy / "model.onnx").exists()
    assert not list(bundle_copy.glob("*.partial"))
    assert "onnx" not in Bundle.load(bundle_copy).manifest.artifacts
