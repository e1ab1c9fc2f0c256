"""`lulc batch`: rasters, globs and STAC items, one map each, identical to lulc-infer on the
same pixels; in-process and on a local Dask cluster; a STAC item missing a band is one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import BANDS, LULC_INFER, pixels, synthetic_scene, write_raster

LULC = str(Path(sys.executable).with_name("lulc"))


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=600)


def stac_item(folder: Path, image: np.ndarray, item_id: str, bands=BANDS) -> Path:
    """A STAC Item with one single-band COG asset per band (keys = band names, eo:bands too)."""
    assets = {}
    for name in bands:
        band = image[BANDS.index(name)][None]
        path = folder / f"{item_id}_{name}.tif"
        with rasterio.open(path, "w", driver="COG", width=band.shape[2], height=band.shape[1], count=1,
                           dtype=band.dtype.name, crs="EPSG:32633", nodata=0,
                           transform=rasterio.transform.from_origin(500000, 5800000, 10, 10)) as dst:
            dst.write(band)
        assets[name.lower()] = {"href": path.name, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                "eo:bands": [{"name": name}], "roles": ["data"]}
    assets["thumbnail"] = {"href": "thumb.png", "roles": ["thumbnail"]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": {"datetime": "2024-06-01T00:00:00Z"},
            "geometry": None, "links": [], "assets": assets}
    path = folder / f"{item_id}.json"
    path.write_text(json.dumps(item))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("batch")
    images = {name: synthetic_scene(90, 110, seed=seed)[0] for name, seed in (("north", 1), ("south", 2), ("s2item", 3))}
    for name in ("north", "south"):
        write_raster(root / f"{name}.tif", images[name], descriptions=BANDS)
    write_raster(root / "s2item-stack.tif", images["s2item"], descriptions=BANDS)
    (root / "stac").mkdir()
    stac_item(root / "stac", images["s2item"], "s2item")
    return {"root": root, "item": root / "stac" / "s2item.json"}


@pytest.mark.slow
@pytest.mark.parametrize("dask", [None, "local:2"])
def test_batch_of_rasters_glob_and_stac_equals_lulc_infer(trained_bundle, inputs, tmp_path, dask):
    root = inputs["root"]
    out = tmp_path / "maps"
    extra = ("--dask", dask) if dask else ()
    result = run(LULC, "batch", trained_bundle, root / "n*.tif", root / "south.tif", inputs["item"], "-o", out,
                 "--probabilities", "--no-progress", *extra)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.tif")) == ["north.tif", "s2item.tif", "south.tif"]
    for name, source in (("north", "north.tif"), ("south", "south.tif"), ("s2item", "s2item-stack.tif")):
        single = tmp_path / f"{name}-single.tif"
        assert run(LULC_INFER, trained_bundle, root / source, "-o", single, "--probabilities", "--no-progress").returncode == 0
        np.testing.assert_array_equal(pixels(out / f"{name}.tif"), pixels(single))


def test_rerun_keeps_finished_maps_and_a_missing_stac_band_is_one_line(trained_bundle, inputs, tmp_path):
    root = inputs["root"]
    out = tmp_path / "maps"
    assert run(LULC, "batch", trained_bundle, root / "north.tif", "-o", out, "--no-progress").returncode == 0
    before = (out / "north.tif").stat().st_mtime_ns
    assert run(LULC, "batch", trained_bundle, root / "north.tif", "-o", out, "--no-progress").returncode == 0
    assert (out / "north.tif").stat().st_mtime_ns == before  # kept, not recomputed
    # a map without the bands now asked for is not kept: it is replaced only with --overwrite
    again = [LULC, "batch", trained_bundle, root / "north.tif", "-o", out, "--no-progress", "--confidence"]
    result = run(*again)
    assert result.returncode == 1 and "north.tif already exists (use --overwrite" in result.stderr, result.stderr
    assert (out / "north.tif").stat().st_mtime_ns == before
    assert run(*again, "--overwrite").returncode == 0
    with rasterio.open(out / "north.tif") as src:
        assert src.descriptions == ("class", "confidence")

    image = synthetic_scene(40, 40, seed=4)[0]
    partial = stac_item(tmp_path, image, "no-nir", bands=BANDS[:3])
    result = run(LULC, "batch", trained_bundle, partial, "-o", out, "--no-progress")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(err) == 2 and "Traceback" not in result.stderr, err
    assert "no-nir has no asset for band b08" in err[0] and not (out / "no-nir.tif").exists()
    assert err[1] == f"0 of 1 maps written to {out}"
