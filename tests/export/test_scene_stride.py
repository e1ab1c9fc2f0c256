"""``--scene-stride N``: a scene model at one class per N px, equal to the trained model run
window by window (the CNN-Sentinel way), exported behind a gate and run by ``lulc-infer``."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import infer_fails, listing
from lulc.export import scene_stride
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import LulcError, ParityError
from lulc.runtime.io.mapformat import PROB_SCALE

PATCH = 16


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def scene_bundle(scene, tmp_path_factory):
    """A scene-cnn bundle (16 px patches, backbone stride 4) with stride-1 and stride-4 models."""
    from lulc.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("stride") / "scene"
    train(TrainConfig(image=str(scene["image"]), labels=str(scene["labels"]), classes=str(scene["classes"]),
                      output=str(out), epochs=2, arch="scene-cnn", tile=PATCH, stride=8, split_block=32, depth=2,
                      width=4, batch_size=8, infer_tile=64, infer_overlap=16, patch_rule="centre"))
    result = cli("export", "--target", "onnx", "--scene-stride", 1, "--scene-stride", 4, out)
    assert result.exit_code == 0, result.output
    return out


def per_window(model, image: np.ndarray, pixels: list[tuple[int, int]], stride: int, context: int) -> np.ndarray:
    """The seed's way, written out independently: for each pixel, the patch window most
    centred on its N px cell, cut with ``context`` px around it and classified on its own."""
    shift = stride * ((PATCH // stride - 1) // 2)
    crops = []
    for y, x in pixels:
        wy, wx = y // stride * stride - shift, x // stride * stride - shift
        crops.append(image[wy - context: wy + PATCH + context, wx - context: wx + PATCH + context])
    probs = np.asarray(model(np.stack(crops), training=False))
    return probs[:, context, context]


def normalised(bundle: Bundle, path) -> np.ndarray:
    m = bundle.manifest
    with rasterio.open(path) as src:
        bands = src.read().astype(np.float32)
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (m.normalization.mean, m.normalization.std))
    return ((bands - mean) / std).transpose(1, 2, 0)


@pytest.mark.parametrize("stride", [1, 4])
def test_stride_map_equals_the_model_run_window_by_window(scene_bundle, scene, tmp_path, stride):
    from lulc.runtime.backends.keras_backend import load_keras_model

    out = tmp_path / "map.tif"
    result = cli("infer", scene_bundle, scene["image"], "-o", out, "--scene-stride", stride, "--probabilities",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        classes, probs = src.read(1), src.read()[1:]
    bundle = Bundle.load(scene_bundle)
    image = normalised(bundle, scene["image"])
    context = 2 * PATCH  # the scene-cnn's receptive field spans 9 px
    rng = np.random.default_rng(0)
    edge = context + PATCH
    pixels = [(int(y), int(x)) for y, x in zip(rng.integers(edge, 128 - edge, 60), rng.integers(edge, 192 - edge, 60))]
    expected = per_window(load_keras_model(bundle), image, pixels, stride, context)
    got = np.stack([probs[:, y, x] for y, x in pixels]).astype(np.float32) / PROB_SCALE
    assert np.abs(got - expected).max() <= 1 / PROB_SCALE  # the map's uint8 rounding
    assert [classes[y, x] for y, x in pixels] == list(expected.argmax(1))
    cells = classes[: 128 // stride * stride, : 192 // stride * stride].reshape(128 // stride, stride, 192 // stride, stride)
    assert (cells == cells[:, :1, :, :1]).all()  # one class per N x N cell
    if stride == 1:
        assert len(np.unique(classes)) > 1


def test_stride_of_one_patch_is_the_bundle_model(scene_bundle, scene, tmp_path):
    maps = []
    for extra in ([], ["--scene-stride", PATCH]):
        out = tmp_path / f"map{len(maps)}.tif"
        assert cli("infer", scene_bundle, scene["image"], "-o", out, "--no-progress", *extra).exit_code == 0
        with rasterio.open(out) as src:
            maps.append(src.read())
    assert np.array_equal(*maps)


def test_json_summary_records_the_stride(scene_bundle, scene, tmp_path):
    result = cli("infer", scene_bundle, scene["image"], "-o", tmp_path / "m.tif", "--scene-stride", 4, "--json",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert (summary["scene_stride"], summary["precision"], summary["backend"]) == (4, "fp32", "onnx")


def test_stride_choices_that_cannot_run_are_one_line(scene_bundle, trained_bundle, scene, tmp_path):
    image = scene["image"]
    infer_fails(scene_bundle, image, "lulc export --target onnx --scene-stride 2", "--scene-stride", "2")
    for extra in (["--precision", "int8"], ["--backend", "keras"]):
        result = cli("infer", scene_bundle, image, "-o", tmp_path / "m.tif", "--scene-stride", 1, *extra)
        assert result.exit_code == 2 and "--scene-stride" in result.output, result.output
    result = cli("infer", trained_bundle, image, "-o", tmp_path / "m.tif", "--scene-stride", 1)
    assert result.exit_code == 2 and "is for scene bundles" in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_export_refuses_a_stride_the_model_cannot_give(scene_bundle, tmp_path):
    from lulc.training.models.scene_cnn import build_scene_cnn

    copy = tmp_path / "bundle"
    shutil.copytree(scene_bundle, copy)
    before = sorted(p.name for p in copy.iterdir())
    for stride in (3, 10**6):  # refused from the manifest, before the ONNX export
        result = cli("export", "--target", "onnx", "--scene-stride", stride, copy)
        assert result.exit_code == 2 and "must divide the bundle's 16 px patch" in result.output, result.output
    assert sorted(p.name for p in copy.iterdir()) == before
    # 6 divides a 24 px patch but is no stride of a backbone that halves twice (1, 2, 4) nor a multiple of 4
    with pytest.raises(LulcError, match="--scene-stride 6 does not fit"):
        scene_stride.strided_model(build_scene_cnn(4, 3, patch=24), 6)


def test_gate_refuses_a_wrong_rewrite_and_writes_nothing(scene_bundle, tmp_path, monkeypatch):
    copy = tmp_path / "bundle"
    shutil.copytree(scene_bundle, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    import keras

    # every phase a copy of phase 0: each window then sits on the stride-4 grid
    monkeypatch.setattr(scene_stride, "_at_every_phase", lambda op, x, s: keras.ops.concatenate([op(x)] * s * s, axis=0))
    with pytest.raises(ParityError, match="--scene-stride 1 export refused"):
        scene_stride.export_scene_stride(Bundle.load(copy), 1)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_hostile_context_in_the_manifest_is_one_line(scene_bundle, scene, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(scene_bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["artifacts"]["onnx-stride4"]["details"]["context_px"] = 10**9
    (copy / "bundle.json").write_text(json.dumps(manifest))
    infer_fails(copy, scene["image"], "re-export it", "--scene-stride", "4")


def nested_backbone(kind: str):
    """A DenseNet-like backbone in a model of its own (zero padding before a strided valid
    conv, a concatenated branch, an average-pool transition), or the same chain without the
    branch as a Sequential."""
    import keras
    from keras import layers

    if kind == "sequential":
        return keras.Sequential([keras.Input((None, None, 3)), layers.ZeroPadding2D(2),
                                 layers.Conv2D(6, 5, strides=2, padding="valid"), layers.BatchNormalization(),
                                 layers.MaxPooling2D(2, padding="same")])
    inner_in = keras.Input((None, None, 3))
    x = layers.Conv2D(6, 5, strides=2, padding="valid")(layers.ZeroPadding2D(2)(inner_in))
    branch = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.Concatenate()([x, branch])
    x = layers.AveragePooling2D(2)(layers.BatchNormalization()(x))
    return keras.Model(inner_in, x)


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_rewrite_is_exact_through_nested_padded_branching_backbones(kind):
    """The rewrite never edits a layer, so it is exact through all of them."""
    import keras

    from lulc.training.models.scene_head import scene_model

    backbone = nested_backbone(kind)
    inputs = keras.Input((None, None, 3))
    model = scene_model(inputs, backbone(inputs), PATCH, 4, 5, "nested")
    rng = np.random.default_rng(1)
    for layer in model.layers + backbone.layers:  # untrained weights are too uniform to tell windows apart
        layer.set_weights([rng.normal(0, .2, w.shape) if w.ndim > 1 else np.abs(rng.normal(1, .5, w.shape))
                           for w in layer.get_weights()])
    image = rng.normal(size=(128, 128, 3)).astype(np.float32)
    pixels = [(int(y), int(x)) for y, x in rng.integers(40, 56, (12, 2))]
    for stride in (1, 2, 4, 8):
        strided, geo = scene_stride.strided_model(model, stride)
        assert geo.receptive < 2 * PATCH
        probs = np.asarray(strided(image[None]))[0]
        got = np.stack([probs[y, x] for y, x in pixels])
        expected = per_window(model, image, pixels, stride, 2 * PATCH)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert not np.allclose(got, per_window(model, image, [(y + stride, x) for y, x in pixels], stride, 2 * PATCH),
                               atol=1e-3)


def test_a_stride_run_leaves_only_the_map_and_its_sidecars(scene_bundle, scene, tmp_path):
    out = tmp_path / "map.tif"
    assert cli("infer", scene_bundle, scene["image"], "-o", out, "--scene-stride", 1, "--no-progress").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(maps=("map.tif",))


@pytest.mark.slow
def test_benchmark_runs_every_case(scene_bundle, scene, tmp_path):
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "scene_stride_bench.py"
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(bench), str(scene_bundle), str(scene["image"]), "--crop-rows", "4",
                           "--crop-cols", "32", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "scene_stride.json").read_text())
    assert [r["stride"] for r in result["rows"]] == [1, 1, 1, 4, PATCH]
    assert all(r["seconds"] > 0 and r["x_seed_keras"] > 0 for r in result["rows"])
    assert 0 < result["stride1_agreement_with_seed_windows"] <= 1
    assert (out / "scene_stride.md").read_text().count("\n| ") == len(result["rows"]) + 1


@pytest.mark.slow
def test_dask_workers_run_the_stride_model(scene_bundle, scene, tmp_path):
    pytest.importorskip("distributed")
    maps = []
    for extra in ([], ["--dask", "local:1", "--block-px", "64"]):
        out = tmp_path / f"map{len(maps)}.tif"
        result = cli("infer", scene_bundle, scene["image"], "-o", out, "--scene-stride", 1, "--probabilities",
                     "--no-progress", *extra)
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            maps.append(src.read())
    assert np.array_equal(*maps)


def test_scene_tiles_overlap_by_whole_cells(scene_bundle, scene, tmp_path):
    """Tiles that overlap by part of a cell would put each tile's cells off the raster's grid."""
    for stride, overlap in ((None, 8), (4, 42)):
        extra = ["--scene-stride", stride] if stride else []
        result = cli("infer", scene_bundle, scene["image"], "-o", tmp_path / "m.tif", "--overlap", overlap, *extra)
        assert result.exit_code == 2 and "class cells" in result.output, result.output
    assert not list(tmp_path.iterdir())
    for stride, overlap in ((None, 16), (4, 44)):
        extra = ["--scene-stride", stride] if stride else []
        result = cli("infer", scene_bundle, scene["image"], "-o", tmp_path / f"m{overlap}.tif", "--overlap", overlap,
                     "--tile", 64, "--no-progress", *extra)
        assert result.exit_code == 0, result.output


def test_batch_rerun_keeps_a_map_only_at_the_same_stride(scene_bundle, scene, tmp_path):
    out = tmp_path / "maps"
    target = out / "image.tif"

    def batch(stride: int, *extra: str):
        return cli("batch", scene_bundle, scene["image"], "-o", out, "--scene-stride", stride, "--no-progress", *extra)

    assert batch(4).exit_code == 0
    first = target.read_bytes(), target.stat().st_mtime_ns
    assert batch(4).exit_code == 0
    assert (target.read_bytes(), target.stat().st_mtime_ns) == first  # same stride: kept
    result = batch(1)  # another stride: not kept, and replaced only when asked
    assert result.exit_code == 1 and "already exists (use --overwrite" in result.output, result.output
    assert target.read_bytes() == first[0]
    assert batch(1, "--overwrite").exit_code == 0
    with rasterio.open(target) as src:
        assert src.tags()["LULC_CELL_PX"] == "1"
    assert target.read_bytes() != first[0]
