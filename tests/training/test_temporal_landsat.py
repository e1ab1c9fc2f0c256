"""The real Landsat 5/7 series (105 dates, fmask per date, no labels) stacked, masked and
classified end to end: `lulc stack` + a pixel-lstm trained on a simulation with the same
dates and bands + `lulc-infer`. Class accuracy is meaningless here (no labels); what is
proven is that a real, gappy 105-date stack runs through the runtime with georeference kept
and that single cloudy dates never turn a pixel into nodata."""
from __future__ import annotations

import pytest
import rasterio
from click.testing import CliRunner

from lulc.runtime.cli import main


@pytest.mark.slow
def test_landsat_series_end_to_end(tmp_path):
    from lulc.export.onnx import export_onnx
    from lulc.training.sampledata import landsat_series_dir
    from lulc.training.simulate import simulate_series
    from lulc.training.timeseries import TemporalConfig, train_temporal

    runner = CliRunner()
    res = runner.invoke(main, ["stack", str(landsat_series_dir()), "-o", str(tmp_path / "lsts"),
                               "--bands", "b3,b4,b5", "--mask-band", "fmask"])
    assert res.exit_code == 0, res.output
    assert "105 dates" in res.output
    with rasterio.open(tmp_path / "lsts" / "stack.vrt") as src:
        raw = src.read().reshape(105, 3, src.height, src.width)
        crs, transform = src.crs, src.transform
    missing = (raw == -9999).any(axis=1)
    assert 0.2 < missing.mean() < 0.8 and missing.any(axis=0).all()  # every pixel lost some dates to clouds

    sim = simulate_series(tmp_path / "sim", 32, 32, like=tmp_path / "lsts", seed=0)
    bundle = train_temporal(TemporalConfig(
        stack=str(sim["stack"]), labels=str(sim["labels"]), classes=str(sim["classes"]), output=str(tmp_path / "b"),
        arch="pixel-lstm", epochs=1, tile=16, stride=16, split_block=16, batch_size=4, infer_tile=64,
        model_options={"units": 4, "num_layers": 1, "bidirectional": False, "dropout": 0.0}))
    assert bundle.manifest.input.time_steps == 105
    assert export_onnx(bundle)["onnx"]["max_abs_diff"] <= 1e-4
    res = runner.invoke(main, ["infer", str(bundle.root), str(tmp_path / "lsts" / "stack.vrt"), "-o", str(tmp_path / "map.tif"),
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "map.tif") as dst:
        assert dst.crs == crs and dst.transform == transform and dst.shape == (61, 61)
        classes = dst.read(1)
    assert classes.max() < len(bundle.manifest.classes)
