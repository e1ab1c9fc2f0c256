"""Training you can trust: short runs that predict in inference mode (batch-norm statistics),
one `lulc train` for every architecture, the test blocks behind the metrics, a random-forest
baseline, and the learning curves in the bundle."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def collapse_scene(root, size: int = 192, bands: int = 13, seed: int = 0):
    """Five spectrally distinct classes whose spectra move together across bands (as land
    cover's do: dark water, bright soil), low noise, and a nodata corner. Before batch-norm
    recalibration a 3-epoch U-Net on it scored validation accuracy 0.10 / 0.84 / 0.24."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (40, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    labels = (((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(-1) % 5).astype(np.uint8)
    shape = rng.uniform(0.5, 1.5, bands)
    spectra = np.array([200, 800, 1500, 2500, 4000.0])[:, None] * shape + rng.normal(0, 100, (5, bands))
    image = np.clip(spectra[labels].transpose(2, 0, 1) + rng.normal(0, 20, (bands, size, size)), 1, 10000).astype(np.uint16)
    image[:, : size // 4, : size // 4] = 0
    write_raster(root / "image.tif", image, descriptions=[f"B{i + 1}" for i in range(bands)])
    write_raster(root / "labels.tif", labels, nodata=255)
    return labels, image[0] != 0


def test_recalibrated_statistics_are_the_population_statistics():
    import keras

    from lulc.training.batchnorm import batchnorm_layers, recalibrate_batchnorm

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(x))
    x = np.random.default_rng(0).normal(3.0, 2.0, (10, 8, 8, 3)).astype(np.float32)
    assert recalibrate_batchnorm(model, x, batch_size=3) == 1  # uneven batches are weighted by their size
    features = keras.Model(inputs, conv).predict_on_batch(x).reshape(-1, 4).astype(np.float64)
    bn = batchnorm_layers(model)[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(0), rtol=1e-4, atol=1e-5)
    assert "call" not in vars(bn)  # the recording hook is gone


@pytest.mark.slow
def test_three_epochs_predict_through_lulc_infer(tmp_path):
    from lulc.export.onnx import export_onnx
    from lulc.runtime.infer import InferOptions, run_inference
    from lulc.training.train import TrainConfig, train

    labels, valid = collapse_scene(tmp_path)
    bundle = train(TrainConfig(image=str(tmp_path / "image.tif"), labels=str(tmp_path / "labels.tif"),
                               output=str(tmp_path / "b"), epochs=3, tile=32, stride=8, split_block=64, batch_size=4,
                               depth=2, width=8, learning_rate=0.003, patience=0))
    history = bundle.manifest.provenance["history"]
    assert history["val_accuracy"][-1] >= 0.9, history  # validation (inference mode) tracks training
    export_onnx(bundle)
    run_inference(bundle.root, tmp_path / "image.tif", tmp_path / "map.tif", InferOptions(backend="onnx", progress=False))
    with rasterio.open(tmp_path / "map.tif") as src:
        predicted = src.read(1)
    assert (predicted[valid] == labels[valid]).mean() >= 0.9
    assert (bundle.root / bundle.manifest.artifacts["learning_curve"].path).stat().st_size > 5000


def test_test_blocks_recorded_and_few_of_them_warned(trained_bundle, caplog):
    from lulc.training.data import MIN_TEST_BLOCKS, TileSet, count_test_blocks

    test = Bundle.load(trained_bundle).manifest.provenance["metrics"]["test"]
    assert isinstance(test["blocks"], int) and 1 <= test["blocks"] and test["pixels"] > 0
    origins = np.array([[0, 0], [0, 16], [32, 0], [64, 96]])  # three 32 px blocks
    tiles = TileSet(np.zeros((4, 32, 32, 1)), np.zeros((4, 32, 32)), np.ones((4, 32, 32), bool), np.full(4, 2),
                    {"block_px": 32}, origins)
    with caplog.at_level(logging.WARNING):
        assert count_test_blocks(tiles) == 3 < MIN_TEST_BLOCKS
    assert "3 spatial block(s)" in caplog.text and "--split-block" in caplog.text


@pytest.mark.slow
def test_evaluate_with_a_random_forest_baseline(bundle_copy, tmp_path):
    result = cli("evaluate", bundle_copy, "--baseline", "rf", "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert "RF F1" in result.output and "random forest (100 trees" in result.output and "spatial block" in result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    forest = metrics["baseline"]
    assert forest["model"] == "random-forest" and forest["pixels"] == metrics["pixels"]  # the same test pixels
    assert 0.0 <= forest["overall_accuracy"] <= 1.0 and set(forest["per_class"]) == set(metrics["per_class"])
    result = cli("evaluate", bundle_copy, "--baseline", "rf", "--split", "all")  # options that do not go together
    assert result.exit_code == 2 and "Error: --baseline rf" in result.output


def test_one_train_command_lists_every_arch_and_refuses_misplaced_options(scene, tmp_path):
    result = cli("train", "--help")
    assert result.exit_code == 0
    for arch in ("unet", "scene-densenet121", "pixel-lstm", "mtlcc", "fcn-convlstm"):
        assert arch in result.output
    temporal = result.output.index("Temporal models")
    assert result.output.index("  --stack PATH") > temporal and result.output.index("  --filters") > temporal
    alias = cli("train-temporal", "--help").output  # the old name is the same command
    assert alias.splitlines()[1:] == result.output.splitlines()[1:] and "train-temporal" in alias.splitlines()[0]
    cases = {
        "--stack does not apply to --arch unet": ["--arch", "unet", "--stack", tmp_path, "--image", scene["image"]],
        "--image does not apply to --arch mtlcc; temporal models read --stack": ["--arch", "mtlcc", "--image", scene["image"]],
        "--filters does not apply to --arch fcn": ["--arch", "fcn", "--filters", 4, "--image", scene["image"]],
    }
    for expected, args in cases.items():
        result = cli("train", *args, "--labels", scene["labels"], "-o", tmp_path / "out")
        # an option mistake: click's exit code and usage lines, then one error line
        assert result.exit_code == 2 and f"Error: {expected}" in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_lulc_train_mtlcc_then_evaluate(tmp_path):
    from lulc.training.simulate import season_dates, simulate_series

    sim = simulate_series(tmp_path / "sim", 48, 48, season_dates(5), seed=1)
    args = ["train", "--arch", "mtlcc", "--stack", sim["stack"], "--labels", sim["labels"], "--classes", sim["classes"],
            "-o", tmp_path / "mtlcc", "--epochs", 1, "--tile", 16, "--stride", 8, "--split-block", 16,
            "--batch-size", 8, "--infer-tile", 32, "--filters", 4]
    # pixel-lstm's --units given to mtlcc: an error naming mtlcc's options, not the default model trained
    result = cli(*args, "--units", 8)
    expected = "Error: Invalid value for --units: is not an option of mtlcc (its options: filters"
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "mtlcc").exists() and not (tmp_path / ".mtlcc.partial").exists()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    m = Bundle.load(tmp_path / "mtlcc").manifest
    assert m.architecture == "mtlcc" and m.input.time_steps == 5 and m.provenance["config"]["model_options"] == {"filters": 4}
    assert (tmp_path / "mtlcc" / "learning_curve.png").is_file()
    result = cli("evaluate", tmp_path / "mtlcc", "--baseline", "rf", "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == m.provenance["metrics"]["test"]["confusion_matrix"]
    assert metrics["baseline"]["pixels"] == metrics["pixels"]
