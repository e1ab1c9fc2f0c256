"""Hostile bundles (issue 13, "the bundle is data, not a pointer"): every attack is one line and
exit code 1 from the real CLI, no traceback, nothing written at or beside the output path.

Each edited artefact gets its checksum updated in bundle.json, as an attacker would do, so
the refusal comes from the check under test and not from the checksum guard.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import BANDS, cli_fails, infer_fails, one_line_failure, synthetic_scene, write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import MANIFEST, sha256sum

LULC_INFER = Path(sys.executable).with_name("lulc-infer")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    scene, _ = synthetic_scene(40, 50)
    return write_raster(tmp_path_factory.mktemp("hostile") / "image.tif", scene, descriptions=BANDS)


def edit_manifest(bundle: Path, change) -> None:
    raw = json.loads((bundle / MANIFEST).read_text())
    change(raw)
    (bundle / MANIFEST).write_text(json.dumps(raw))


def replace_artifact(bundle: Path, name: str, write) -> Path:
    """Let ``write(path)`` replace the artefact's file and record its new checksum."""
    raw = json.loads((bundle / MANIFEST).read_text())
    path = bundle / raw["artifacts"][name]["path"]
    path.unlink()
    write(path)
    raw["artifacts"][name]["sha256"] = sha256sum(path)
    (bundle / MANIFEST).write_text(json.dumps(raw))
    return path


# --- artefact paths that leave the bundle ------------------------------------------------------

def _point_onnx_outside(bundle: Path, outside: Path, as_path) -> None:
    shutil.copy(bundle / "model.onnx", outside)  # a working model: only the path check can stop it
    edit_manifest(bundle, lambda r: r["artifacts"]["onnx"].update(path=as_path(outside)))


@pytest.mark.parametrize("as_path", [lambda p: "../" + p.name, lambda p: str(p)], ids=["dotdot", "absolute"])
def test_artifact_path_outside_the_bundle_is_refused_by_lulc_infer(bundle_copy, image, tmp_path, as_path):
    """Through the installed ``lulc-infer`` script in a subprocess, as a user runs it."""
    _point_onnx_outside(bundle_copy, tmp_path / "x.onnx", as_path)
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    proc = subprocess.run([str(LULC_INFER), str(bundle_copy), str(image), "-o", str(out), "--backend", "onnx",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    line = one_line_failure(proc.returncode, proc.stderr, "not inside the bundle folder")
    assert "x.onnx" in line
    assert not list(out.parent.iterdir())


def test_symlink_leading_out_of_the_bundle_is_refused(bundle_copy, image, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle_copy / "model.onnx", outside)
    (bundle_copy / "model.onnx").symlink_to(outside)  # same bytes, so the checksum still matches
    infer_fails(bundle_copy, image, "link leading outside the bundle", "--backend", "onnx")


def test_symlink_inside_the_bundle_is_fine(bundle_copy, image, tmp_path):
    shutil.move(bundle_copy / "model.onnx", bundle_copy / "real.onnx")
    (bundle_copy / "model.onnx").symlink_to("real.onnx")
    result = CliRunner().invoke(main, ["infer", str(bundle_copy), str(image), "-o", str(tmp_path / "m.tif"),
                                       "--backend", "onnx", "--no-progress"])
    assert result.exit_code == 0, result.output


def test_add_artifact_never_writes_outside(bundle_copy, tmp_path):
    from lulc.runtime.core.bundle import Bundle
    from lulc.runtime.core.errors import BundleError

    staged = bundle_copy / "staged.json"
    staged.write_text("{}")
    with pytest.raises(BundleError, match="not inside the bundle folder"):
        Bundle.load(bundle_copy).add_artifact("metrics", staged, "json", dest="../metrics.json")
    assert staged.exists() and not (tmp_path / "metrics.json").exists()


# --- a manifest that is not a manifest ---------------------------------------------------------

@pytest.mark.parametrize(("text", "match"), [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[1, 2, 3]", "not an object"),
    ('"bundle"', "not an object"),
    ("{not json", "cannot read"),
    (b"\xff\xfe{}", "cannot read"),
], ids=["nested", "list", "string", "invalid", "not-utf8"])
def test_malformed_manifest(bundle_copy, image, text, match):
    path = bundle_copy / MANIFEST
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    infer_fails(bundle_copy, image, match)


@pytest.mark.parametrize(("field", "index", "value", "match"), [
    ("std", 1, 0.0, "std[1] is 0.0"),
    ("std", 2, float("nan"), "std[2] is nan"),
    ("std", 0, -1.0, "std[0] is -1.0"),
    ("mean", 3, float("nan"), "mean[3] is nan"),
])
def test_unusable_normalisation(bundle_copy, image, field, index, value, match):
    edit_manifest(bundle_copy, lambda r: r["normalization"][field].__setitem__(index, value))
    line = infer_fails(bundle_copy, image, match)
    assert "normalization" in line


# --- model files that are not what the manifest says -------------------------------------------

def tiny_onnx(path: Path, channels: int, classes: int, rank2: bool = False) -> None:
    """A softmax over a per-pixel linear map (NHWC in, NHWC out), or with ``rank2`` the same
    on the tile's mean: (N, classes), as a scene classifier without the spatial head gives."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(channels, classes)).astype(np.float32), "w")
    nodes, x = [], "bands"
    if rank2:
        nodes.append(helper.make_node("ReduceMean", ["bands"], ["pooled"], axes=[1, 2], keepdims=0))
        x = "pooled"
    nodes += [helper.make_node("MatMul", [x, "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    out_shape = ["N", classes] if rank2 else ["N", "H", "W", classes]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("bands", TensorProto.FLOAT, ["N", "H", "W", channels])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.mark.parametrize(("channels", "classes", "rank2", "match"), [
    (4, 3, True, "rank-2 output"),
    (4, 5, False, "outputs 5 classes but"),
    (4, 2, False, "outputs 2 classes but"),
    (6, 3, False, "takes 6 input channels but"),
], ids=["rank2", "more-classes", "fewer-classes", "channels"])
def test_onnx_that_does_not_fit_the_manifest(bundle_copy, image, channels, classes, rank2, match):
    replace_artifact(bundle_copy, "onnx", lambda p: tiny_onnx(p, channels, classes, rank2))
    line = infer_fails(bundle_copy, image, match, "--backend", "onnx")
    if not rank2:  # both numbers: the model's and the manifest's
        assert ("lists 3" if channels == 4 else "lists 4") in line


def test_the_tiny_onnx_that_fits_runs(bundle_copy, image, tmp_path):
    """The control: the same hand-built graph with the manifest's shapes classifies fine."""
    replace_artifact(bundle_copy, "onnx", lambda p: tiny_onnx(p, 4, 3))
    result = CliRunner().invoke(main, ["infer", str(bundle_copy), str(image), "-o", str(tmp_path / "m.tif"),
                                       "--backend", "onnx", "--no-progress"])
    assert result.exit_code == 0, result.output


def _zip_garbage(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{this is not json")
        zf.writestr("metadata.json", "{}")


@pytest.mark.parametrize("write", [
    lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)),
    _zip_garbage,
    lambda p: p.write_bytes(b""),
], ids=["random-bytes", "zip-garbage", "empty"])
def test_corrupt_keras_model(bundle_copy, image, write):
    replace_artifact(bundle_copy, "keras", write)
    infer_fails(bundle_copy, image, "cannot load the Keras model", "--backend", "keras")


def _save_keras(path: Path, head) -> None:
    import keras

    inputs = keras.Input((None, None, len(BANDS)))
    keras.Model(inputs, head(inputs)).save(path)


def test_keras_lambda_layer_is_refused_by_safe_mode(bundle_copy, image):
    import keras

    def lambda_model(x):
        return keras.layers.Conv2D(3, 1, activation="softmax")(keras.layers.Lambda(lambda t: t * 2.0)(x))

    replace_artifact(bundle_copy, "keras", lambda p: _save_keras(p, lambda_model))
    infer_fails(bundle_copy, image, "Lambda layer", "--backend", "keras")


def test_keras_class_count_mismatch(bundle_copy, image):
    import keras

    replace_artifact(bundle_copy, "keras", lambda p: _save_keras(p, keras.layers.Conv2D(5, 1, activation="softmax")))
    infer_fails(bundle_copy, image, "model.keras outputs 5 classes but", "--backend", "keras")


def test_pickled_samples_are_never_unpickled(bundle_copy, tmp_path):
    """``lulc export`` reads the sample tiles for its parity gate: an object array (pickle) in
    samples.npz is one line, and the bundle's existing ONNX model is left as it was."""
    before = (bundle_copy / "model.onnx").read_bytes()
    marker = tmp_path / "pwned"
    replace_artifact(bundle_copy, "samples", lambda p: np.savez(p, x=np.array([Exploit(marker)], dtype=object)))
    cli_fails(["export", "--target", "onnx", bundle_copy], "pickle")
    assert not marker.exists()
    assert (bundle_copy / "model.onnx").read_bytes() == before


class Exploit:
    """Unpickling this would create ``marker``: proof that the samples were (not) unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
