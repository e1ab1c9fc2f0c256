"""Samples from rasters: blocked splits, streamed statistics, patches, stacks, indices, folders."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.core.errors import InputRasterError, LulcError
from lulc.runtime.indices import append_indices
from lulc.training.data import SPLITS, SampleSpec, extract_tiles
from lulc.training.eurosat import load_folder
from lulc.training.sources import RasterStack, valid_mask


def cut(scene, **kw):
    spec = SampleSpec(**{"tile": 16, "stride": 8, "split_block": 32, "seed": 3, **kw})
    with RasterStack([str(scene["image"])]) as stack, rasterio.open(scene["labels"]) as lab:
        return extract_tiles(stack, lab, spec)


def test_split_is_spatially_blocked_and_recorded(scene):
    tiles, _ = cut(scene)
    rec = tiles.split_record
    blocks = [set(rec["blocks"][name]) for name in SPLITS]
    assert not (blocks[0] & blocks[1] or blocks[0] & blocks[2] or blocks[1] & blocks[2])
    assert sum(map(len, blocks)) == rec["block_grid"][0] * rec["block_grid"][1] == 4 * 6
    # no pixel of any tile is covered by a tile of another split
    cover = np.full((128, 192), -1)
    for (oy, ox), s in zip(tiles.origins, tiles.split):
        patch = cover[oy : oy + 16, ox : ox + 16]
        assert ((patch == -1) | (patch == s)).all()
        patch[:] = s
    for name in SPLITS:
        assert len(tiles.part(name)) == rec["tiles"][name] > 0
    again, _ = cut(scene)
    assert np.array_equal(again.split, tiles.split)  # same seed, same split
    assert not np.array_equal(cut(scene, seed=4)[0].split_record["blocks"]["test"], rec["blocks"]["test"])


def test_streamed_stats_match_numpy_on_training_blocks(scene):
    tiles, norm = cut(scene)
    with rasterio.open(scene["image"]) as src:
        image = src.read().astype(np.float64)
    pixels = []
    for b in tiles.split_record["blocks"]["train"]:
        by, bx = (b // 6) * 32, (b % 6) * 32
        pixels.append(image[:, by : by + 32, bx : bx + 32].reshape(4, -1))
    pixels = np.concatenate(pixels, axis=1)
    np.testing.assert_allclose(norm.mean, pixels.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(norm.std, pixels.std(axis=1), rtol=1e-6)
    np.testing.assert_allclose(norm.p99, np.percentile(pixels, 99, axis=1), rtol=0.05)


def test_nodata_is_excluded_from_stats_and_labels(tmp_path, scene):
    image, labels = synthetic_scene(64, 64)
    image[:, :32] = 0  # nodata
    img = write_raster(tmp_path / "img.tif", image, descriptions=BANDS)
    lab = write_raster(tmp_path / "lab.tif", labels, nodata=255)
    spec = SampleSpec(tile=16, stride=16, split_block=16, seed=0, min_labeled=0.0)
    with RasterStack([str(img)]) as stack, rasterio.open(lab) as lab_src:
        tiles, norm = extract_tiles(stack, lab_src, spec)
    assert min(norm.mean) > 100  # zeros never entered the mean
    assert (tiles.y[~tiles.valid] == 255).all() and (~tiles.valid).any()


def test_scene_patches_majority_and_centre(scene):
    for rule in ("majority", "centre"):
        tiles, _ = cut(scene, task="scene", rule=rule, min_labeled=0.5)
        assert (tiles.y == tiles.y[:, :1, :1]).all()  # one label per patch
        assert tiles.y.max() < 3
    with rasterio.open(scene["labels"]) as src:
        lab = src.read(1)
    spec = SampleSpec(tile=16, stride=16, split_block=32, seed=3, task="scene", rule="centre")
    with RasterStack([str(scene["image"])]) as stack, rasterio.open(scene["labels"]) as lab_src:
        tiles, _ = extract_tiles(stack, lab_src, spec)
    assert set(np.unique(tiles.y[:, 8, 8])) <= set(np.unique(lab[lab != 255]))


def test_too_few_tiles_for_the_split(scene):
    with pytest.raises(LulcError, match="too few"):
        cut(scene, tile=64, split_block=96)  # 2 blocks for 3 splits
    with pytest.raises(LulcError, match="smaller than one split block"):
        cut(scene, tile=64, split_block=256)


def test_raster_stack_grids_align_and_corrupt_files(scene, tmp_path):
    image, _ = synthetic_scene(128, 192, seed=1)
    same = write_raster(tmp_path / "same.tif", image[:2], descriptions=["B11", "B12"])
    coarse = write_raster(tmp_path / "coarse.tif", image[:2, ::2, ::2].copy(), descriptions=["B11", "B12"],
                          transform=rasterio.transform.from_origin(500000, 5800000, 20, 20))
    with RasterStack([str(scene["image"]), str(same)]) as stack:
        raw, valid = stack.read(rasterio.windows.Window(0, 0, 8, 8))
        assert stack.bands == [*BANDS, "B11", "B12"] and raw.shape == (6, 8, 8) and valid.all()
    with pytest.raises(LulcError, match="--align"):
        RasterStack([str(scene["image"]), str(coarse)])
    with RasterStack([str(scene["image"]), str(coarse)], align=True) as stack:
        assert stack.read(rasterio.windows.Window(0, 0, 8, 8))[0].shape == (6, 8, 8)
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(LulcError, match="corrupt"):
        RasterStack([str(tmp_path / "corrupt.tif")])
    with pytest.raises(LulcError, match="not found"):
        RasterStack([str(tmp_path / "missing.tif")])


def test_indices_shared_with_runtime():
    raw = np.array([[[100.0, 0.0, np.nan]], [[300.0, 0.0, 1.0]], [[200.0, 0.0, 1.0]], [[600.0, 0.0, 1.0]]],
                   dtype=np.float32)  # B02 B03 B04 B08, 1 x 3 px
    out = append_indices(raw, BANDS, ["ndvi", "ndwi"])
    assert out.shape == (6, 1, 3)
    np.testing.assert_allclose(out[4, 0, :2], [(600 - 200) / 800, 0.0])  # 0/0 -> 0, not NaN
    np.testing.assert_allclose(out[5, 0, 0], (300 - 600) / 900)
    assert np.isnan(valid_mask(out, None)).sum() == 0 and not valid_mask(raw, None)[0, 2]
    with pytest.raises(InputRasterError, match="needs band.*B11"):
        append_indices(raw, BANDS, ["ndbi"])
    with pytest.raises(InputRasterError, match="unknown index"):
        append_indices(raw, BANDS, ["evi"])


def test_eurosat_folder(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(["Forest", "River", "Urban"]):
        (tmp_path / name).mkdir()
        for i in range(8):
            patch = (rng.normal(1000 * (k + 1), 50, (4, 16, 16))).astype(np.uint16)
            write_raster(tmp_path / name / f"{name}_{i}.tif", patch, nodata=None, descriptions=BANDS)
    tiles, norm, spec, classes = load_folder(str(tmp_path), seed=1, derived=["ndvi"])
    assert [c["name"] for c in classes] == ["Forest", "River", "Urban"]
    assert spec.channels == [*BANDS, "ndvi"] and tiles.x.shape == (24, 16, 16, 5)
    assert all((tiles.split == i).any() for i in range(3))
    write_raster(tmp_path / "Forest" / "odd.tif", np.ones((4, 8, 8), np.uint16), nodata=None)
    with pytest.raises(LulcError, match="patches must all be"):
        load_folder(str(tmp_path), seed=1)
