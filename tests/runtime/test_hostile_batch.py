"""`lulc batch` against lying STAC metadata and broken items: the files' own band names win
over the item's, one broken item never costs the others their maps, and a batch that made
nothing leaves no folder behind. Real processes, files compared afterwards."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BANDS, LULC_INFER, pixels, synthetic_scene, write_raster

LULC = str(Path(sys.executable).with_name("lulc"))


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, args), "--no-progress"], capture_output=True, text=True, timeout=600)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.strip().splitlines() if line.strip()]


def feature(item_id: str, assets: dict) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None, "links": [],
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "assets": assets}


def band_assets(folder: Path, image: np.ndarray, prefix: str, described: bool = True, hrefs=None) -> dict:
    """One single-band GeoTIFF per band (named for its band when ``described``), keyed by band."""
    assets = {}
    for i, name in enumerate(BANDS):
        path = write_raster(folder / f"{prefix}_{name}.tif", image[i], descriptions=[name] if described else None)
        assets[name.lower()] = {"href": (hrefs or {}).get(name, path.name), "eo:bands": [{"name": name}]}
    return assets


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "stac").mkdir()
    return tmp_path / "stac"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_scene(64, 80, seed=7)[0]


def test_a_stack_whose_own_band_names_contradict_the_item_is_refused(trained_bundle, folder, image, tmp_path):
    """A multi-band file whose descriptions run in reverse, declared in model order by eo:bands:
    refused in one line, as lulc-infer refuses the same file; --band-names ignore trusts the item."""
    reversed_names = write_raster(folder / "stack.tif", image[::-1], descriptions=BANDS[::-1])
    item = write_json(folder / "lie.json", feature("lie", {"data": {"href": "stack.tif",
                                                                     "eo:bands": [{"name": b} for b in BANDS]}}))
    out = tmp_path / "maps"
    result = run(LULC, "batch", trained_bundle, item, "-o", out)
    err = lines(result)
    assert result.returncode == 1 and len(err) == 2, err
    assert "lie: asset data (stack.tif) names its bands B08, B04, B03, B02 but the item declares B02, B03, B04, B08" in err[0]
    assert err[1] == f"0 of 1 maps written to {out}" and not out.exists()
    alone = run(LULC_INFER, trained_bundle, reversed_names, "-o", tmp_path / "alone.tif")
    assert alone.returncode == 1 and "differ from the model's" in alone.stderr

    trusted = run(LULC, "batch", trained_bundle, item, "-o", out, "--band-names", "ignore")
    assert trusted.returncode == 0, trusted.stderr
    assert lines(trusted) == [f"1 of 1 maps written to {out}"]


def test_an_asset_pointing_at_another_band_is_refused(trained_bundle, folder, image, tmp_path):
    """The asset keyed B02 points at the B03 file (which says so itself)."""
    assets = band_assets(folder, image, "t1", hrefs={"B02": "t1_B03.tif"})
    item = write_json(folder / "swap.json", feature("swap", assets))
    result = run(LULC, "batch", trained_bundle, item, "-o", tmp_path / "maps")
    err = lines(result)
    assert result.returncode == 1 and "swap: asset b02 (t1_B03.tif) names its bands B03 but the item declares B02" in err[0]


def test_files_without_band_names_take_the_items_and_match_lulc_infer(trained_bundle, folder, image, tmp_path):
    """Unnamed single-band files (as most COG assets are) are stacked under the item's names;
    file:// hrefs are local paths. The map equals lulc-infer on the same bands."""
    assets = band_assets(folder, image, "plain", described=False)
    assets["b08"]["href"] = (folder / "plain_B08.tif").as_uri()
    item = write_json(folder / "plain.json", feature("plain", assets))
    out = tmp_path / "maps"
    result = run(LULC, "batch", trained_bundle, item, "-o", out, "--band-names", "strict")
    assert result.returncode == 0, result.stderr
    single = write_raster(tmp_path / "stack.tif", image, descriptions=BANDS)
    assert run(LULC_INFER, trained_bundle, single, "-o", tmp_path / "single.tif").returncode == 0
    np.testing.assert_array_equal(pixels(out / "plain.tif"), pixels(tmp_path / "single.tif"))
    assert sorted(p.name for p in out.iterdir()) == ["plain.qml", "plain.tif", "plain.tif.aux.xml"]


def test_broken_items_fail_alone(trained_bundle, folder, image, tmp_path):
    """A collection whose first item points at a corrupt file, then one missing a band, then an
    id that cannot be a file name, then a good item: the good map is written, each failure is
    one line, "1 of 4", exit 1."""
    broken = band_assets(folder, image, "broken")
    (folder / "broken_B04.tif").write_bytes(b"II*\0 not a tiff")
    missing = {k: v for k, v in band_assets(folder, image, "missing").items() if k != "b08"}
    good = band_assets(folder, image, "good")
    collection = write_json(folder / "items.json", {"type": "FeatureCollection", "features": [
        feature("broken", broken), feature("missing", missing), feature("bad\nid", good), feature("good", good)]})
    out = tmp_path / "maps"
    result = run(LULC, "batch", trained_bundle, collection, "-o", out)
    err = lines(result)
    assert result.returncode == 1 and len(err) == 4, err
    assert any("has no usable id" in line and "'bad\\nid'" in line for line in err), err
    assert any("missing has no asset for band b08" in line for line in err), err
    assert any("broken" in line and "broken_B04.tif" in line for line in err), err
    assert err[-1] == f"1 of 4 maps written to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["good.qml", "good.tif", "good.tif.aux.xml"]
    single = write_raster(tmp_path / "good.tif", image, descriptions=BANDS)
    assert run(LULC_INFER, trained_bundle, single, "-o", tmp_path / "single.tif").returncode == 0
    np.testing.assert_array_equal(pixels(out / "good.tif"), pixels(tmp_path / "single.tif"))


def test_a_batch_that_makes_nothing_leaves_no_folder(trained_bundle, tmp_path):
    out = tmp_path / "new" / "maps"
    result = run(LULC, "batch", trained_bundle, tmp_path / "nothing-*.tif", tmp_path / "absent.tif", "-o", out)
    err = lines(result)
    assert result.returncode == 1 and len(err) == 3, err
    assert err[-1] == f"0 of 2 maps written to {out}" and not (tmp_path / "new").exists()
