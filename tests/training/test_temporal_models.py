"""Temporal models end to end on a tiny simulated stack with cloud gaps: train one epoch,
export ONNX and TF.js within 1e-4 of Keras, and classify the stack with lulc-infer (georeference kept)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

ARCH_OPTIONS = {
    "pixel-lstm": {"units": 4, "num_layers": 2, "dropout": 0.1},
    "mtlcc": {"filters": 4, "cell": "gru"},
    "fcn-convlstm": {"depth": 1, "width": 4},
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from lulc.training.simulate import season_dates, simulate_series

    return simulate_series(tmp_path_factory.mktemp("sim"), 48, 48, season_dates(5), seed=1)


def _train(sim, out, arch, **extra):
    from lulc.training.timeseries import TemporalConfig, train_temporal

    cfg = TemporalConfig(stack=str(sim["stack"]), labels=str(sim["labels"]), classes=str(sim["classes"]),
                         output=str(out), arch=arch, epochs=1, tile=16, stride=8, split_block=16, batch_size=8,
                         infer_tile=32, infer_overlap=8, model_options=ARCH_OPTIONS[arch], **extra)
    return train_temporal(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCH_OPTIONS))
def test_train_export_infer(sim, tmp_path, arch):
    from lulc.export.onnx import export_onnx
    from lulc.export.tfjs import export_tfjs
    from lulc.runtime.infer import InferOptions, run_inference

    bundle = _train(sim, tmp_path / arch, arch)
    m = bundle.manifest
    assert m.input.time_steps == 5 and len(m.input.channels) == 15 and m.input.channels[1] == f"{m.input.dates[0].replace('-', '')}_nir"
    assert "unrolled" in m.provenance["temporal"]["recurrence"] and "NaN" in m.provenance["temporal"]["missing_dates"]
    assert np.isnan(bundle.load_samples()).any(), "parity samples must include missing dates"
    figures = export_onnx(bundle)["onnx"]
    assert figures["max_abs_diff"] <= 1e-4
    # unrolled hand-written cells are plain graphs: no while-loop ops for tfjs to choke on
    assert export_tfjs(bundle)["tfjs"]["max_abs_diff"] <= 1e-4
    out = tmp_path / "map.tif"
    run_inference(bundle.root, sim["stack"], out, InferOptions(backend="onnx", progress=False))
    with rasterio.open(out) as dst, rasterio.open(sim["stack"]) as src:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        classes = dst.read(1)
    # cloud gaps on single dates must not make pixels nodata: every pixel has a class
    assert classes.max() < len(m.classes)


@pytest.mark.slow
def test_random_sequences_and_unstable_water(sim, tmp_path):
    bundle = _train(sim, tmp_path / "b", "mtlcc", sequence="random", sequence_length=3,
                    mask_unstable_water="red,nir", water_threshold=0.0)
    temporal = bundle.manifest.provenance["temporal"]
    assert temporal["sequence"] == "random" and temporal["unstable_water"]["bands"] == "red,nir"


def test_point_samples_train_pixel_lstm_on_series(sim, tmp_path):
    """Points with a class column become (N, T, C) series (1 x 1 samples), as in generate_series."""
    import fiona
    from rasterio.transform import xy

    with rasterio.open(sim["labels"]) as lab:
        labels, transform, crs = lab.read(1), lab.transform, lab.crs
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(labels != 255)
    pick = rng.choice(len(rows), 120, replace=False)
    names = {c["id"]: c["name"] for c in __import__("json").loads(sim["classes"].read_text())}
    points = tmp_path / "points.geojson"
    schema = {"geometry": "Point", "properties": {"class": "str"}}
    with fiona.open(points, "w", driver="GeoJSON", crs=crs.to_wkt(), schema=schema) as dst:
        for r, c in zip(rows[pick], cols[pick]):
            x, y = xy(transform, int(r), int(c))
            dst.write({"geometry": {"type": "Point", "coordinates": (x, y)},
                       "properties": {"class": names[int(labels[r, c])]}})
    from lulc.training.timeseries import TemporalConfig, train_temporal

    bundle = train_temporal(TemporalConfig(
        stack=str(sim["stack"]), labels=str(points), classes=str(sim["classes"]), output=str(tmp_path / "px"),
        arch="pixel-lstm", epochs=1, tile=1, split_block=16, batch_size=16, infer_tile=32, infer_overlap=0,
        model_options=ARCH_OPTIONS["pixel-lstm"]))
    prov = bundle.manifest.provenance
    assert sum(prov["split"]["tiles"].values()) == 120  # one sample per point, nothing else
    assert prov["metrics"]["test"]["pixels"] == prov["split"]["tiles"]["test"]
    assert bundle.load_samples().shape[1:] == (1, 1, 15)
