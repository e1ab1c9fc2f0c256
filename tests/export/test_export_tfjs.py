"""TF.js export: a graph model that runs in Node's @tensorflow/tfjs, gated both ways."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lulc.export import tfjs
from lulc.export.parity import keras_reference
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, ParityError

pytestmark = pytest.mark.slow  # each export converts a SavedModel and starts Node (~10 s)


@pytest.fixture(scope="module")
def tfjs_bundle(trained_bundle, tmp_path_factory):
    """A copy of the trained bundle exported once through the CLI (read-only)."""
    dst = tmp_path_factory.mktemp("tfjs") / "bundle"
    shutil.copytree(trained_bundle, dst)
    result = CliRunner().invoke(main, ["export", "--target", "tfjs", str(dst)])
    assert result.exit_code == 0, result.output
    assert "tfjs: max abs diff" in result.output
    return dst


def test_manifest_records_graph_model_and_parity(tfjs_bundle):
    art = Bundle.load(tfjs_bundle).manifest.artifacts["tfjs"]
    assert art.path == "tfjs" and art.format == "tfjs-graph-model"
    assert art.parity["max_abs_diff"] <= art.parity["tolerance"] == tfjs.TOLERANCE
    assert art.parity["argmax_agreement"] == 1.0
    assert art.details["converted_by"].startswith("TensorFlow.js Converter v4.")
    assert not list(tfjs_bundle.glob(".*partial"))
    # the converter's stand-ins for decision forests and JAX do not outlive the import
    assert "tensorflow_decision_forests" not in sys.modules


def test_node_runs_the_bundle_like_keras_on_unseen_tiles(tfjs_bundle):
    """Independent of the gate: new tiles, and a tile size other than the samples'."""
    bundle = Bundle.load(tfjs_bundle)
    model, samples, _ = keras_reference(bundle)
    x = np.concatenate([samples[:2], samples[:2][:, ::-1] * 1.5], axis=1)  # (2, 2H, W, C)
    expected = np.asarray(model(x, training=False))
    got = tfjs.run_node(bundle.artifact_path("tfjs"), x)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= tfjs.TOLERANCE


def test_tfjs_folder_holds_the_graph_model_only(tfjs_bundle):
    """The page reads bands, normalisation, tile and classes from bundle.json: no side file."""
    art = Bundle.load(tfjs_bundle).manifest.artifacts["tfjs"]
    model_json = json.loads((tfjs_bundle / "tfjs" / "model.json").read_text())
    (group,) = model_json["weightsManifest"]
    assert model_json["format"] == "graph-model"
    assert sorted(p.name for p in (tfjs_bundle / "tfjs").iterdir()) == sorted(["model.json", *group["paths"]])
    assert art.details["input_name"] in {v["name"] for v in model_json["signature"]["inputs"].values()}


def test_gate_refuses_perturbed_weights_and_writes_nothing(bundle_copy, monkeypatch):
    real = tfjs.convert

    def convert_with_bad_weights(model, out_dir):
        """Scale half of the largest float32 weight, found through the weights manifest."""
        real(model, out_dir)
        (group,) = json.loads((out_dir / "model.json").read_text())["weightsManifest"]
        (shard,) = group["paths"]  # the fixture model is far below the 4 MB shard size
        data = np.fromfile(out_dir / shard, dtype=np.uint8)
        offset, spans = 0, []
        for w in group["weights"]:
            size = int(np.prod(w["shape"])) * 4  # float32 and int32 only in this graph
            if w["dtype"] == "float32":
                spans.append((size, offset))
            offset += size
        size, start = max(spans)
        weights = data[start : start + size].view("<f4")
        weights[: weights.size // 2] *= 1.5
        data.tofile(out_dir / shard)

    monkeypatch.setattr(tfjs, "convert", convert_with_bad_weights)
    with pytest.raises(ParityError, match="TF.js export refused: max abs probability difference"):
        tfjs.export_tfjs(Bundle.load(bundle_copy))
    assert not (bundle_copy / "tfjs").exists() and not list(bundle_copy.glob(".*partial"))
    assert "tfjs" not in Bundle.load(bundle_copy).manifest.artifacts


def test_missing_node_modules_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LULC_WEB_DIR", str(tmp_path))
    (tmp_path / "package-lock.json").write_text("{}")  # a checkout's web folder before `npm ci`
    with pytest.raises(BackendUnavailable, match=rf"tf.min.js: run `npm ci --prefix {tmp_path} --ignore-scripts`"):
        tfjs.run_node(tmp_path, np.zeros((1, 8, 8, 4), np.float32))
