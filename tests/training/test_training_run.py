"""Training runs end to end: config file + flags, provenance, resume, determinism, evaluate,
scene bundles through lulc-infer, and one-line errors for bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.training.config import TrainConfig
from lulc.training.train import train

TINY = ["--tile", "32", "--stride", "16", "--split-block", "32", "--depth", "2", "--width", "4",
        "--batch-size", "8", "--epochs", "1"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny_config(scene, output, **kw) -> TrainConfig:
    settings = dict(image=str(scene["image"]), labels=str(scene["labels"]), output=str(output), epochs=1, tile=32,
                    stride=16, split_block=32, depth=2, width=4, batch_size=8, infer_tile=64, infer_overlap=16)
    return TrainConfig(**{**settings, **kw})


def weights_of(bundle_dir) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(bundle_dir / "model.keras").get_weights()


@pytest.mark.slow
def test_config_file_flags_override_and_provenance(scene, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"image: {scene['image']}\nlabels: {scene['labels']}\narch: fcn\nepochs: 3\n"
                      "tile: 32\nsplit-block: 32\nwidth: 4\ndepth: 2\nclass_weights: balanced\nbrightness: 0.1\n")
    result = cli("train", config, "--epochs", 1, "-o", tmp_path / "b", "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "overall accuracy" in result.output
    m = Bundle.load(tmp_path / "b").manifest
    p = m.provenance
    assert (m.architecture, p["config"]["epochs"], p["config"]["seed"], p["config"]["brightness"]) == ("fcn", 1, 3, 0.1)
    assert p["config_sources"]["file"] == str(config.resolve()) and "epochs" in p["config_sources"]["from_flags"]
    assert len(p["class_weights"]) == 3 and p["epochs_run"] == 1
    assert p["split"]["method"] == "spatial-blocks" and p["metrics"]["test"]["split"] == "test"
    for name in ("metrics", "confusion", "keras"):
        assert (tmp_path / "b" / m.artifacts[name].path).is_file()
    assert (tmp_path / "b" / "logs").is_dir() and not (tmp_path / ".b.partial").exists()
    assert not (tmp_path / "b" / "checkpoint").exists()


@pytest.mark.slow
def test_same_seed_same_model_and_resume_after_interrupt(scene, tmp_path, monkeypatch):
    a = train(tiny_config(scene, tmp_path / "a", seed=5))
    b = train(tiny_config(scene, tmp_path / "b", seed=5))
    for wa, wb in zip(weights_of(a.root), weights_of(b.root)):
        np.testing.assert_array_equal(wa, wb)

    # an interrupt after the first epoch leaves the staged checkpoint, not a bundle
    import lulc.training.evaluate as evaluate

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_tiles", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(scene, tmp_path / "c", epochs=1, seed=5))
    monkeypatch.undo()
    staging = tmp_path / ".c.partial"
    assert (staging / "checkpoint" / "last.keras").is_file() and not (tmp_path / "c").exists()
    result = cli("train", "--image", scene["image"], "--labels", scene["labels"], "-o", tmp_path / "c", *TINY)
    assert result.exit_code == 1 and "--resume" in result.output
    with pytest.raises(Exception, match="other data or settings"):
        train(tiny_config(scene, tmp_path / "c", epochs=2, seed=6, resume=True))
    resumed = train(tiny_config(scene, tmp_path / "c", epochs=2, seed=5, resume=True))
    assert resumed.manifest.provenance["epochs_run"] == 2
    assert len(resumed.manifest.provenance["history"]["loss"]) == 2


@pytest.mark.slow
def test_evaluate_command_rebuilds_the_test_split(trained_bundle, bundle_copy, tmp_path):
    recorded = Bundle.load(trained_bundle).manifest.provenance["metrics"]["test"]
    result = cli("evaluate", bundle_copy, "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == recorded["confusion_matrix"]
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    result = cli("evaluate", bundle_copy, "--split", "all")
    assert result.exit_code == 0, result.output
    assert Bundle.load(bundle_copy).manifest.artifacts["metrics"].details["split"] == "all"


@pytest.mark.slow
def test_scene_bundle_runs_through_lulc_infer(scene, tmp_path):
    bundle = train(tiny_config(scene, tmp_path / "scene", arch="scene-cnn", tile=16, stride=8, split_block=32,
                               patch_rule="centre"))
    m = bundle.manifest
    assert (m.task, m.tile.overlap, m.tile.size % 16) == ("scene", 0, 0)
    assert m.provenance["metrics"]["test"]["unit"] == "patch"
    from lulc.export.onnx import export_onnx

    export_onnx(bundle)  # the per-cell head is plain layers: it exports and runs on onnxruntime
    result = cli("infer", bundle.root, scene["image"], "-o", tmp_path / "map.tif", "--backend", "onnx", "--no-progress")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "map.tif") as src:
        classes = src.read(1)
    cells = classes.reshape(8, 16, 12, 16)
    assert (cells == cells[:, :1, :, :1]).all()  # one class per 16 px stride cell


def test_bad_input_gives_one_line(scene, tmp_path):
    base = ["train", "--image", scene["image"], "-o", tmp_path / "out", *TINY]
    two = tmp_path / "two.json"
    two.write_text('[{"name": "a"}, {"name": "b"}]')
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"class": "a"},
                   "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [0, 0]]]}}]}))
    empty = write_raster(tmp_path / "empty.tif", np.full((128, 192), 255, np.uint8), nodata=255)
    other = write_raster(tmp_path / "other.tif", np.ones((4, 64, 64), np.uint16))
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00 not really a tiff")
    cases = {
        "not in the class list": ["--labels", scene["labels"], "--classes", two],
        "overlap": ["--labels", far],
        "empty": ["--labels", empty, "--classes", two],
        "--align": ["--labels", scene["labels"], "--image", other],
        "too few": ["--labels", scene["labels"], "--split-block", 96, "--tile", 64],
        "corrupt": ["--labels", tmp_path / "corrupt.tif"],
        "needs band(s) B11": ["--labels", scene["labels"], "--indices", "ndbi"],
        "--weights": ["--labels", scene["labels"], "--arch", "scene-vgg16", "--weights", tmp_path / "no.h5"],
    }
    for expected, extra in cases.items():
        result = cli(*base, *extra)
        assert result.exit_code == 1, (expected, result.output)
        assert expected in result.output and "Traceback" not in result.output, (expected, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "out").exists()


def test_indices_bundle_runs_through_lulc_infer_like_training(scene, tmp_path):
    """The runtime appends --indices exactly as training did: same inputs, same classes."""
    from lulc.export.onnx import export_onnx, run_onnx
    from lulc.runtime.indices import append_indices
    from lulc.runtime.io.mapformat import NODATA_CLASS

    bundle = train(tiny_config(scene, tmp_path / "ndvi", indices="ndvi,ndwi"))
    m = bundle.manifest
    assert m.input.channels == [*m.input.bands, "ndvi", "ndwi"] and len(m.normalization.mean) == 6
    export_onnx(bundle)
    out = tmp_path / "map.tif"
    # one tile covering the whole 128 x 192 scene: no blending, so the runtime must equal a direct run
    result = cli("infer", bundle.root, scene["image"], "-o", out, "--tile", 192, "--overlap", 0, "--no-progress")
    assert result.exit_code == 0, result.output
    with rasterio.open(scene["image"]) as src, rasterio.open(out) as dst:
        raw = src.read(out_dtype=np.float32)
        got = dst.read(1)
    x = append_indices(raw, m.input.bands, m.input.derived).transpose(1, 2, 0)
    z = (x - np.float32(m.normalization.mean)) / np.float32(m.normalization.std)
    padded = np.zeros((192, 192, 6), np.float32)
    padded[:128] = z
    expected = run_onnx(bundle.artifact_path("onnx"), padded[None])[0, :128].argmax(-1)
    valid = got != NODATA_CLASS
    assert valid.all()
    assert (got == expected).mean() > 0.999
