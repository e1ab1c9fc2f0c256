"""lulc-infer end to end on tiny rasters: georeference, nodata, seam-free tiling, outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import BANDS, listing, synthetic_scene, write_raster
from lulc.export.onnx import run_onnx
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.io.mapformat import NODATA_CLASS


def _invoke(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args), "--no-progress"], catch_exceptions=False)


def whole_image_probabilities(bundle_dir, image: np.ndarray, nodata: float) -> tuple[np.ndarray, np.ndarray]:
    """The model run once on the whole raster (padded to the U-Net divisor): the seam-free
    truth, as (classes, probabilities (H, W, K))."""
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    x = image.astype(np.float32).transpose(1, 2, 0)
    valid = ~(np.isnan(x).any(-1) | (x == nodata).any(-1))
    z = (x - np.asarray(m.normalization.mean, np.float32)) / np.asarray(m.normalization.std, np.float32)
    z[~valid] = 0.0
    d = m.tile.divisor
    h, w = z.shape[:2]
    padded = np.zeros((-(-h // d) * d, -(-w // d) * d, z.shape[2]), np.float32)
    padded[:h, :w] = z
    probs = run_onnx(bundle.artifact_path("onnx"), padded[None])[0, :h, :w]
    return np.where(valid, probs.argmax(-1), NODATA_CLASS).astype(np.uint8), probs


@pytest.fixture
def odd_raster(tmp_path):
    """150 x 203 px: not a multiple of the 64 px tile in either direction, with a nodata hole."""
    image, _ = synthetic_scene(150, 203, seed=3)
    image[:, 20:40, 30:70] = 0
    image[2, 100, 150] = 0  # one band nodata is enough to make the pixel nodata
    path = write_raster(tmp_path / "odd.tif", image, descriptions=BANDS,
                        transform=rasterio.transform.from_origin(612345.0, 4500000.0, 20.0, 20.0))
    return path, image


def test_georeference_shape_and_nodata(trained_bundle, odd_raster, tmp_path):
    path, image = odd_raster
    out = tmp_path / "map.tif"
    result = _invoke(trained_bundle, path, "-o", out, "--probabilities", "--confidence")
    assert result.exit_code == 0, result.output
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (src.crs, src.transform, src.width, src.height)
        assert dst.count == 1 + 3 + 1 and dst.nodata == NODATA_CLASS
        assert dst.descriptions[:2] == ("class", "prob_crop")
        classes = dst.read(1)
        probs = dst.read(list(range(2, 5))).astype(int)
        conf = dst.read(5)
    hole = (image == 0).any(0)
    assert (classes[hole] == NODATA_CLASS).all()
    assert (classes[~hole] < 3).all()
    # scaled probabilities sum to ~254 and the class is their argmax; confidence is their max
    assert np.abs(probs[:, ~hole].sum(0) - 254).max() <= 3
    # (a one-epoch model is unsure: rounding to uint8 can tie, so compare values, not argmax)
    p = probs[:, ~hole]
    chosen = np.take_along_axis(p, classes[~hole][None].astype(int), 0)[0]
    assert (chosen >= p.max(0) - 1).all()
    assert (np.abs(conf[~hole].astype(int) - p.max(0)) <= 1).all()


def test_tiled_equals_whole_image_inside(trained_bundle, odd_raster, tmp_path):
    """Blending overlapping tiles reproduces whole-image inference: no seams at tile edges."""
    path, image = odd_raster
    out = tmp_path / "map.tif"
    assert _invoke(trained_bundle, path, "-o", out, "--tile", 64, "--overlap", 24).exit_code == 0
    with rasterio.open(out) as dst:
        tiled = dst.read(1)
    truth, probs = whole_image_probabilities(trained_bundle, image, 0)
    # Tiles see less context than the whole image near their edges: where the one-epoch test
    # model hesitates between classes (top-2 margin < 0.1, about half the pixels) that alone
    # may flip the argmax; where it decides, blending must reproduce the whole-image answer.
    top2 = np.sort(probs, axis=-1)[..., -2:]
    decided = np.zeros(truth.shape, bool)
    decided[8:-8, 8:-8] = True
    decided &= top2[..., 1] - top2[..., 0] >= 0.1
    agreement = (tiled[decided] == truth[decided]).mean()
    assert decided.mean() > 0.2 and agreement >= 0.995, f"tiled vs whole-image agreement {agreement:.4f}"
    assert (tiled == NODATA_CLASS).sum() == (truth == NODATA_CLASS).sum()


def test_float_input_nan_is_nodata(trained_bundle, tmp_path):
    image, _ = synthetic_scene(70, 90, seed=5)
    data = image.astype(np.float32)
    data[:, 10:20, 10:30] = np.nan
    path = write_raster(tmp_path / "f.tif", data, nodata=None, descriptions=BANDS)
    out = tmp_path / "m.tif"
    assert _invoke(trained_bundle, path, "-o", out, "--backend", "onnx").exit_code == 0
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert (classes[10:20, 10:30] == NODATA_CLASS).all()
    assert (classes[30:, 40:] < 3).all()


def test_keras_and_onnx_backends_agree(trained_bundle, odd_raster, tmp_path):
    path, _ = odd_raster
    maps = {}
    for backend in ("onnx", "keras"):
        out = tmp_path / f"{backend}.tif"
        assert _invoke(trained_bundle, path, "-o", out, "--backend", backend).exit_code == 0
        with rasterio.open(out) as dst:
            maps[backend] = dst.read(1)
            assert dst.tags()["LULC_BACKEND"] == backend
    assert (maps["onnx"] == maps["keras"]).mean() > 0.999


def test_quicklook_png_uses_class_colours(trained_bundle, odd_raster, tmp_path):
    from PIL import Image

    path, _ = odd_raster
    out, png = tmp_path / "map.tif", tmp_path / "map.png"
    assert _invoke(trained_bundle, path, "-o", out, "--quicklook", png).exit_code == 0
    image = np.asarray(Image.open(png))
    rgba, key = image[:150, :203], image[:, 203:]  # the map, then the legend on its right
    assert image.shape[0] == 150 and image.shape[1] > 203
    colours = {tuple(c.color) for c in Bundle.load(trained_bundle).manifest.classes}
    opaque = {tuple(p[:3]) for p in rgba[rgba[..., 3] == 255].reshape(-1, 4)}
    assert opaque <= colours
    assert (rgba[25, 50, 3] == 0)  # nodata is transparent
    legend_colours = {tuple(p[:3]) for p in key.reshape(-1, 4)}
    assert opaque <= legend_colours  # every class in the map has its swatch in the legend


def test_several_inputs_are_stacked_in_order(trained_bundle, odd_raster, tmp_path):
    """The bands split over two files (as trained with `--image a --image b`) classify exactly
    like the one 4-band file; wrong order, another grid or another nodata are one-line errors."""
    path, image = odd_raster
    with rasterio.open(path) as src:
        transform = src.transform
    a = write_raster(tmp_path / "a.tif", image[:2], descriptions=BANDS[:2], transform=transform)
    b = write_raster(tmp_path / "b.tif", image[2:], descriptions=BANDS[2:], transform=transform)
    one, two = tmp_path / "one.tif", tmp_path / "two.tif"
    assert _invoke(trained_bundle, path, "-o", one).exit_code == 0
    assert _invoke(trained_bundle, a, b, "-o", two).exit_code == 0
    with rasterio.open(one) as x, rasterio.open(two) as y:
        np.testing.assert_array_equal(x.read(), y.read())
        assert y.transform == transform
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(("a.tif", "b.tif", "odd.tif"), ("one.tif", "two.tif"))

    shifted = write_raster(tmp_path / "shifted.tif", image[2:], descriptions=BANDS[2:])
    for args, message in [((b, a), "band names B04, B08, B02, B03 differ"),
                          ((a, shifted), "is not on the grid of")]:
        result = _invoke(trained_bundle, *args, "-o", tmp_path / "bad.tif")
        assert result.exit_code == 1 and message in result.output, result.output
        assert not list(tmp_path.glob("*bad*"))


def test_json_summary(trained_bundle, odd_raster, tmp_path):
    import json

    path, _ = odd_raster
    result = _invoke(trained_bundle, path, "-o", tmp_path / "map.tif", "--json", "--backend", "onnx")
    assert result.exit_code == 0
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["pixels"] == 150 * 203 and summary["backend"] == "onnx"
    assert summary["device"] == "CPUExecutionProvider"
    mpix, s = summary["pixels"] / 1e6, summary["seconds"]  # both figures are rounded to 3 decimals
    assert mpix / (s + 5e-4) - 5e-4 <= summary["mpix_per_s"] <= mpix / (s - 5e-4) + 5e-4
    assert 50 < summary["peak_rss_mb"] < 4096  # MB on Linux, not KiB
    assert summary["tiles_run"] > 0


def test_storage_layout_does_not_change_the_map(trained_bundle, odd_raster, tmp_path):
    """Uncompressed tiled files are read past GDAL's block cache; compressed strips through it."""
    path, image = odd_raster
    with rasterio.open(path) as src:
        profile = src.profile
    layouts = {"tiled": {"tiled": True, "blockxsize": 64, "blockysize": 64, "interleave": "pixel"},
               "deflate": {"compress": "deflate", "interleave": "band", "blockysize": 7}}
    maps = {}
    for name, layout in layouts.items():
        copy = tmp_path / f"{name}.tif"
        with rasterio.open(copy, "w", **{**profile, **layout}) as dst:
            dst.write(image)
        assert _invoke(trained_bundle, copy, "-o", tmp_path / f"{name}-map.tif").exit_code == 0
        with rasterio.open(tmp_path / f"{name}-map.tif") as out:
            maps[name] = out.read(1)
    np.testing.assert_array_equal(maps["tiled"], maps["deflate"])
    assert (maps["tiled"] != NODATA_CLASS).mean() > 0.9


def test_class_names_reach_gis_software(trained_bundle, odd_raster, tmp_path):
    """QGIS shows names, not ids: GDAL reads category names and a RAT from the .aux.xml
    beside the map, and QGIS applies the same-named .qml as the layer's default style."""
    import xml.etree.ElementTree as ET

    path, _ = odd_raster
    out = tmp_path / "map.tif"
    assert _invoke(trained_bundle, path, "-o", out).exit_code == 0
    classes = Bundle.load(trained_bundle).manifest.classes
    pam = ET.parse(tmp_path / "map.tif.aux.xml").getroot()
    assert [c.text or "" for c in pam.iter("Category")] == [c.name for c in classes]
    rows = [[f.text for f in row.iter("F")] for row in pam.iter("Row")]
    assert rows == [[str(c.id), c.name, *map(str, c.color)] for c in classes]
    style = ET.parse(tmp_path / "map.qml").getroot()
    entries = [(e.get("value"), e.get("label"), e.get("color")) for e in style.iter("paletteEntry")]
    assert entries == [(str(c.id), c.name, "#{:02x}{:02x}{:02x}".format(*c.color)) for c in classes]
    with rasterio.open(out) as dst:  # GDAL still opens the map with its sidecar, colours intact
        assert {k: v[:3] for k, v in dst.colormap(1).items() if k < len(classes)} == {c.id: tuple(c.color) for c in classes}
        assert dst.tags(1)["CLASS_0"] == classes[0].name


def test_maps_keep_the_label_rasters_own_class_values(tmp_path):
    """Labels coded 5, 6, 7 train a 3-class model (no phantom classes); its maps are coded
    5, 6, 7 again, with names and colours to match, and `lulc change` reads them."""
    import xml.etree.ElementTree as ET

    from lulc.export.onnx import export_onnx
    from lulc.training.train import TrainConfig, train

    image, labels = synthetic_scene(96, 128, seed=8)
    write_raster(tmp_path / "image.tif", image, descriptions=BANDS)
    write_raster(tmp_path / "labels.tif", (labels + 5).astype(np.uint8), nodata=255)
    out = tmp_path / "bundle"
    train(TrainConfig(image=str(tmp_path / "image.tif"), labels=str(tmp_path / "labels.tif"), output=str(out),
                      epochs=1, tile=32, stride=16, split_block=32, depth=2, width=4, batch_size=8,
                      infer_tile=64, infer_overlap=16))
    export_onnx(Bundle.load(out))
    assert len(Bundle.load(out).manifest.classes) == 3
    assert _invoke(out, tmp_path / "image.tif", "-o", tmp_path / "a.tif").exit_code == 0
    with rasterio.open(tmp_path / "a.tif") as dst:
        values = set(np.unique(dst.read(1))) - {NODATA_CLASS}
        names = json.loads(dst.tags(1)["CLASS_NAMES"])
        assert values and values <= {5, 6, 7} and sorted(map(int, names)) == [5, 6, 7]
        assert set(dst.colormap(1)) >= {5, 6, 7}
    rows = [[f.text for f in row.iter("F")][0] for row in ET.parse(tmp_path / "a.tif.aux.xml").getroot().iter("Row")]
    assert rows == ["5", "6", "7"]
    result = CliRunner().invoke(main, ["change", str(tmp_path / "a.tif"), str(tmp_path / "a.tif"), "-o",
                                       str(tmp_path / "c.tif")])
    assert result.exit_code == 0 and "0.00 of" in result.output, result.output
