"""Tile/block geometry at raster edges, blend weights, and streaming == whole-image blending."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import BANDS, PixelSession, synthetic_scene, write_raster
from lulc.runtime import session as session_module
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.infer import InferOptions, run_inference
from lulc.runtime.tiling import blend_weights, make_grid, tile_origins

GEOMETRIES = [(1, 1, 16, 4, 16), (15, 17, 16, 4, 16), (64, 64, 16, 0, 32), (70, 93, 16, 6, 20),
              (257, 130, 64, 16, 100), (100, 33, 32, 31, 8)]


@pytest.mark.parametrize("length,size,overlap", [(1, 16, 4), (16, 16, 4), (17, 16, 4), (100, 32, 8), (257, 64, 16)])
def test_tile_origins_cover_every_pixel(length, size, overlap):
    origins = tile_origins(length, size, size - overlap)
    assert origins[0] == 0 and origins[-1] < length
    assert (np.diff(origins) == size - overlap).all()
    assert origins[-1] + size >= length  # the last tile reaches the edge (padded if it overhangs)
    assert len(origins) == 1 or origins[-2] + size < length  # and no tile is redundant


@pytest.mark.parametrize("h,w,size,overlap,block_px", GEOMETRIES)
def test_blocks_partition_the_raster_and_hold_every_tile_once(h, w, size, overlap, block_px):
    grid = make_grid(h, w, size, overlap, block_px)
    owned = np.zeros((h, w), int)
    tiles = []
    for b in grid.blocks():
        owned[b.y0 : b.y0 + b.owned_h, b.x0 : b.x0 + b.owned_w] += 1
        assert b.tile_ys.min() >= 0 and b.tile_xs.min() >= 0
        assert b.tile_ys.max() + size <= grid.acc_span and b.tile_xs.max() + size <= grid.acc_span
        tiles += [(b.y0 + y, b.x0 + x) for y, x in zip(b.tile_ys, b.tile_xs)]
    assert (owned == 1).all()
    stride = size - overlap
    expected = {(y, x) for y in tile_origins(h, size, stride) for x in tile_origins(w, size, stride)}
    assert sorted(tiles) == sorted(expected)


@pytest.mark.parametrize("size,overlap", [(16, 4), (64, 16), (256, 32), (32, 0)])
def test_blend_weights_taper_and_pair_to_one(size, overlap):
    weight = blend_weights(size, overlap)
    assert weight.shape == (size, size) and weight.min() > 0 and weight.max() == 1.0
    np.testing.assert_allclose(weight, weight.T)
    ramp = weight[size // 2]
    if overlap:
        # in an overlap, the falling edge of one tile and the rising edge of the next sum to 1
        np.testing.assert_allclose(ramp[size - overlap :] + ramp[:overlap], 1.0, atol=2e-3)
        assert (np.diff(ramp[:overlap]) > 0).all()
    assert (ramp[overlap : size - overlap] == 1.0).all()


def whole_image_probs(bundle_dir, image: np.ndarray, session: PixelSession) -> np.ndarray:
    m = Bundle.load(bundle_dir).manifest
    x = (image.astype(np.float32).transpose(1, 2, 0) - np.float32(m.normalization.mean)) / np.float32(m.normalization.std)
    return np.floor(session.predict(x).transpose(2, 0, 1) * 254 + 0.5)


@pytest.mark.parametrize("tile,overlap,block_px", [(16, 6, 20), (24, 8, 40), (16, 0, 16), (16, 4, 12)])
def test_streamed_blocks_equal_whole_image_everywhere(bundle_copy, tmp_path, monkeypatch, tile, overlap, block_px):
    """With a per-pixel model the blended, block-streamed map equals whole-image inference at
    every pixel, edges included: blending, carried strips and padding add nothing."""
    image, _ = synthetic_scene(70, 97, seed=7)  # (16, 4, 12): the last block owns 13 > 16 - 4 columns
    path = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    session = PixelSession()
    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: session)
    opts = InferOptions(tile=tile, overlap=overlap, block_px=block_px, probabilities=True, progress=False)
    summary = run_inference(bundle_copy, path, tmp_path / "out.tif", opts)
    with rasterio.open(tmp_path / "out.tif") as dst:
        probs = dst.read(list(range(2, 5))).astype(int)
    grid = make_grid(70, 97, tile, overlap, block_px)
    assert len(grid) >= 4 and summary.tiles_run == sum(len(b.tile_ys) for b in grid.blocks())
    assert np.abs(probs - whole_image_probs(bundle_copy, image, session)).max() <= 1
