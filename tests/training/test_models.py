"""Every architecture builds for any band count and trains one step; pretrained-weight adaptation."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from lulc.runtime.core.errors import LulcError, SettingError
from lulc.training.models import build_model
from lulc.training.models.pretrained import adapt_kernel, rgb_positions

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
TINY = {"depth": 2, "width": 4}


def one_step(model, size: int = 32, channels: int = 13, classes: int = 3) -> float:
    # eager: tracing a graph for DenseNet's 121 layers costs more than the one step itself
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(2, size, size, channels)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, classes, (2, size, size))
    return float(model.train_on_batch(x, y))


@pytest.mark.parametrize(("arch", "extra"), [("unet", {}), ("fcn", {}), ("scene-cnn", {"patch": 32})])
def test_light_architectures_build_and_train(arch, extra):
    model = build_model(arch, 13, 3, **TINY, **extra)
    assert model.output_shape == (None, None, None, 3)
    out = model.predict(np.zeros((1, 64, 64, 13), np.float32), verbose=0)
    assert out.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert np.isfinite(one_step(model))


def test_an_option_the_builder_does_not_take_is_refused_with_the_ones_it_does():
    with pytest.raises(SettingError, match=r"--units is not an option of mtlcc \(its options: filters, kernel, cell"):
        build_model("mtlcc", 6, 3, time_steps=2, units=8)
    with pytest.raises(SettingError, match=r"model_options.patch is not an option of unet \(its options: depth, width\)"):
        build_model("unet", 4, 3, patch=32)


def test_scene_model_gives_one_class_per_cell():
    model = build_model("scene-cnn", 4, 5, patch=16, depth=2, width=4)
    assert model.divisor == 16
    out = model.predict(np.random.default_rng(0).normal(size=(1, 48, 32, 4)).astype(np.float32), verbose=0)[0]
    cells = out.reshape(3, 16, 2, 16, 5)
    assert np.allclose(cells, cells[:, :1, :, :1])  # constant inside each 16 px cell


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["scene-vgg16", "scene-densenet121"])
def test_keras_application_scene_models_train_one_step(arch):
    model = build_model(arch, 13, 3, patch=32, freeze_backbone=False)
    assert np.isfinite(one_step(model, size=32))


def test_first_conv_adaptation_rules():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)  # R, G, B
    rgb = rgb_positions(S2, 13)
    assert rgb == [3, 2, 1]
    out = adapt_kernel(kernel, 13, rgb)
    assert out.shape == (3, 3, 13, 8)
    np.testing.assert_array_equal(out[:, :, 3], kernel[:, :, 0])  # B04 <- red
    np.testing.assert_array_equal(out[:, :, 1], kernel[:, :, 2])  # B02 <- blue
    np.testing.assert_allclose(out[:, :, 7], kernel.mean(axis=2), rtol=1e-6)  # B08 <- mean
    with pytest.raises(LulcError, match="B04/B03/B02"):
        rgb_positions(["band1", "band2", "band3", "band4"], 4)


@pytest.mark.slow
def test_vgg16_weights_file_from_3_bands_to_13(tmp_path):
    rgb = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    rgb.save_weights(path)
    model = build_model("scene-vgg16", 13, 3, patch=32, bands=S2, weights=str(path), freeze_backbone=True)
    backbone = model.get_layer("vgg16")
    first = backbone.get_layer("block1_conv1").get_weights()[0]
    source = rgb.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(first[:, :, 3], source[:, :, 0])
    np.testing.assert_allclose(first[:, :, 0], source.mean(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(backbone.get_layer("block5_conv3").get_weights()[0],
                                  rgb.get_layer("block5_conv3").get_weights()[0])
    assert not backbone.trainable_weights and model.trainable_weights  # frozen backbone, live head
    with pytest.raises(LulcError, match="not found"):
        build_model("scene-vgg16", 13, 3, patch=32, bands=S2, weights=str(tmp_path / "none.h5"))
