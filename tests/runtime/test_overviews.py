"""Class-map overviews: the mode kernel against its definition, GDAL's level count, and the
overviews a real run writes into its COG."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.shutil import copy as rio_copy

from conftest import BANDS, listing, synthetic_scene, write_raster
from lulc.runtime.infer import InferOptions, run_inference
from lulc.runtime.io import overviews
from lulc.runtime.io.mapformat import NODATA_CLASS
from lulc.runtime.io.overviews import overview_sizes
from lulc.runtime.kernels.cpu import mode_2x2
from lulc.runtime.kernels.reference import reference_mode_2x2


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 1), (2, 7, 9), (3, 6, 8)])
def test_mode_matches_its_definition_at_odd_edges_and_nodata(shape):
    rng = np.random.default_rng(sum(shape))
    src = rng.choice(np.array([0, 1, 2, NODATA_CLASS], np.uint8), shape)
    out = np.empty((shape[0], -(-shape[1] // 2), -(-shape[2] // 2)), np.uint8)
    mode_2x2(src, out)
    np.testing.assert_array_equal(out, reference_mode_2x2(src))


def test_mode_rules():
    cells = np.array([[[3, 3, 1, 1],
                       [1, 4, 2, 5],
                       [255, 255, 255, 7],
                       [255, 255, 255, 255]]], np.uint8)
    out = np.empty((1, 2, 2), np.uint8)
    mode_2x2(cells, out)
    # majority wins; a 2:2 tie keeps the first (top-left) value; nodata never outvotes a class
    assert out[0].tolist() == [[3, 1], [NODATA_CLASS, 7]]


@pytest.mark.parametrize("width, height", [(512, 512), (513, 40), (1536, 768), (2100, 1030)])
def test_level_count_is_the_cog_drivers(width, height, tmp_path):
    src = tmp_path / "src.tif"
    write_raster(src, np.zeros((1, height, width), np.uint8), nodata=None)
    rio_copy(str(src), str(tmp_path / "cog.tif"), driver="COG")  # GDAL picks its own levels
    with rasterio.open(tmp_path / "cog.tif") as cog:
        assert len(overview_sizes(width, height)) == len(cog.overviews(1))


def test_run_writes_mode_overviews_and_no_temporary_files(bundle_copy, session, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(overviews, "STRIP_BYTES", 7 * 1100 * 5)  # levels built from many 6-row strips
    image, _ = synthetic_scene(600, 1100, seed=2)
    image[:, :100, :300] = 0  # nodata corner
    path = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    out = tmp_path / "out.tif"
    run_inference(bundle_copy, path, out, InferOptions(tile=64, overlap=8, progress=False, probabilities=True))
    with rasterio.open(out) as dst:
        assert dst.overviews(1) == [2, 4]
        full = dst.read()
        level = full
        for _ in dst.overviews(1):
            level = reference_mode_2x2(level)
            np.testing.assert_array_equal(dst.read(out_shape=level.shape), level)
        assert dst.descriptions[:2] == ("class", "prob_crop") and "CLASS_COLORS" in dst.tags(1)
    assert (full[0, :100, :300] == NODATA_CLASS).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing(("bundle", "in.tif"), ("out.tif",))
