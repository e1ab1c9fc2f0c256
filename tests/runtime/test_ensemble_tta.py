"""Ensembles and test-time augmentation: an ensemble of a bundle with itself is the bundle's
map, --tta equals the mean of the model over the transformed tiles computed here by hand
with onnxruntime, and members that do not fit are one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import rasterio

from conftest import BANDS, cli_fails, infer, pixels, synthetic_scene, write_raster
from lulc.runtime.core.bundle import Bundle


@pytest.fixture
def image(tmp_path) -> Path:
    data, _ = synthetic_scene(64, 64, seed=6)
    data[:, :6, :10] = 0  # nodata corner
    return write_raster(tmp_path / "in.tif", data, descriptions=BANDS)


def test_an_ensemble_of_a_bundle_with_itself_is_its_map(trained_bundle, image, tmp_path):
    single, double = tmp_path / "single.tif", tmp_path / "double.tif"
    assert infer(trained_bundle, image, "-o", single, "--probabilities").returncode == 0
    result = infer(trained_bundle, trained_bundle, image, "-o", double, "--probabilities", "--json")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(pixels(double), pixels(single))
    summary = json.loads(result.stdout)
    assert summary["ensemble"] == [str(trained_bundle), str(trained_bundle.resolve())] and summary["tta"] is None


def test_members_that_do_not_fit_are_one_line(trained_bundle, image, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_bundle, other)
    manifest = json.loads((other / "bundle.json").read_text())
    manifest["classes"][0]["name"] = "orchard"
    (other / "bundle.json").write_text(json.dumps(manifest))
    cli_fails(["infer", trained_bundle, other, image, "-o", tmp_path / "m.tif", "--no-progress"],
              "must give the same classes")
    manifest["classes"][0]["name"] = "crop"
    manifest["input"]["bands"] = BANDS[::-1]
    (other / "bundle.json").write_text(json.dumps(manifest))
    cli_fails(["infer", trained_bundle, image, "-o", tmp_path / "m.tif", "--ensemble", other, "--no-progress"],
              "must read the same bands in order")
    assert not (tmp_path / "m.tif").exists()


def by_hand(bundle: Path, image: Path, views) -> np.ndarray:
    """The model's probabilities over the one 64 px tile, averaged over ``views`` (pairs of
    NumPy functions on NHWC arrays), computed here without lulc's kernels."""
    m = Bundle.load(bundle).manifest
    with rasterio.open(image) as src:
        raw = src.read().astype(np.float32)
    valid = ~(raw == 0).any(0)
    x = (raw.transpose(1, 2, 0) - np.array(m.normalization.mean, np.float32)) / np.array(m.normalization.std, np.float32)
    x = np.where(valid[..., None], x, 0.0).astype(np.float32)[None]
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = [back(session.run(None, {name: np.ascontiguousarray(there(x))})[0]) for there, back in views]
    return np.mean(outs, axis=0)[0].transpose(2, 0, 1), valid


FLIPS = [(lambda a: a, lambda a: a), (lambda a: a[:, :, ::-1], lambda a: a[:, :, ::-1]),
         (lambda a: a[:, ::-1], lambda a: a[:, ::-1]), (lambda a: a[:, ::-1, ::-1], lambda a: a[:, ::-1, ::-1])]
D4 = [(lambda a, k=k, f=f: np.rot90(a[:, :, ::-1] if f else a, k, axes=(1, 2)),
       lambda a, k=k, f=f: (lambda b: b[:, :, ::-1] if f else b)(np.rot90(a, -k, axes=(1, 2))))
      for f in (False, True) for k in range(4)]


@pytest.mark.parametrize("mode, views", [("flips", FLIPS), ("d4", D4)])
def test_tta_is_the_mean_over_the_transformed_tiles(trained_bundle, image, tmp_path, mode, views):
    out = tmp_path / "tta.tif"
    result = infer(trained_bundle, image, "-o", out, "--tta", mode, "--probabilities", "--tile", 64, "--overlap", 0,
                   "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tta"] == mode
    probs, valid = by_hand(trained_bundle, image, views)
    got = pixels(out)
    expected = np.floor(probs * 254 + 0.5)
    assert np.abs(got[1:].astype(int) - expected)[:, valid].max() <= 1
    sure = np.sort(probs, axis=0)[-1] - np.sort(probs, axis=0)[-2] > 1e-4
    np.testing.assert_array_equal(got[0][valid & sure], probs.argmax(0)[valid & sure])
    plain = tmp_path / "plain.tif"
    assert infer(trained_bundle, image, "-o", plain, "--probabilities", "--tile", 64, "--overlap", 0).returncode == 0
    assert (pixels(plain)[1:] != got[1:]).any()  # the views do change the model's answer
