"""From raw class map to product: the streamed minimum mapping unit equals GDAL's whole-image
sieve pixel for pixel, the filters equal their whole-image definitions written here, the
polygons rasterise back to the map, and lulc-infer / lulc clean / --dask give the same maps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize, shapes
from rasterio.features import sieve as gdal_sieve
from rasterio.transform import from_origin

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.postprocess import stage
from lulc.runtime.postprocess.sieve import sieve
from lulc.runtime.postprocess.stage import PostOptions, postprocess

LULC = str(Path(sys.executable).with_name("lulc"))
LULC_INFER = str(Path(sys.executable).with_name("lulc-infer"))
TRANSFORM = from_origin(500000, 5800000, 10, 10)


def noisy_map(rng, h: int, w: int, classes: int = 4, cell: int = 5, noise: float = 0.15) -> np.ndarray:
    """Blocky regions with salt-and-pepper, a few nodata pixels and a nodata corner."""
    base = np.repeat(np.repeat(rng.integers(0, classes, (h // cell + 1, w // cell + 1)), cell, 0), cell, 1)[:h, :w]
    out = base.astype(np.uint8)
    flip = rng.random((h, w)) < noise
    out[flip] = rng.integers(0, classes, int(flip.sum()))
    out[rng.random((h, w)) < 0.03] = 255
    out[: h // 6, : w // 5] = 255
    return out


def streamed(band: np.ndarray, threshold: int, rows: int, connectivity: int = 8) -> np.ndarray:
    out = np.empty_like(band)

    def strips():
        for r0 in range(0, band.shape[0], rows):
            yield r0, band[r0 : r0 + rows]

    def write(r0, part):
        out[r0 : r0 + part.shape[0]] = part

    sieve(strips, band.shape[1], threshold, write, connectivity=connectivity)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_streamed_sieve_equals_gdal_on_the_whole_band(seed):
    rng = np.random.default_rng(seed)
    band = noisy_map(rng, int(rng.integers(8, 90)), int(rng.integers(8, 90)), cell=int(rng.integers(2, 9)))
    threshold = int(rng.integers(2, 20))
    for connectivity in (8, 4):
        reference = gdal_sieve(band, threshold, mask=band != 255, connectivity=connectivity)
        for rows in (1, 3, 16, 1000):  # regions cross many strips, or none
            np.testing.assert_array_equal(streamed(band, threshold, rows, connectivity), reference)
    assert (streamed(band, threshold, 7)[band == 255] == 255).all()


def majority_by_hand(band: np.ndarray, r: int) -> np.ndarray:
    """The majority rule written out: most frequent valid class in the window; ties keep the
    pixel's own class when it is among them, else the smallest; nodata stays."""
    out = band.copy()
    h, w = band.shape
    for y in range(h):
        for x in range(w):
            if band[y, x] == 255:
                continue
            window = band[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            counts = np.bincount(window[window != 255], minlength=256)
            best = counts.max()
            out[y, x] = band[y, x] if counts[band[y, x]] == best else int(np.flatnonzero(counts == best)[0])
    return out


def bayes_by_hand(probs: np.ndarray, valid: np.ndarray, r: int, s: float) -> np.ndarray:
    """sits' Bayesian smoothing written out per pixel and class (window mean and variance of
    the logits of the valid pixels)."""
    k, h, w = probs.shape
    p = np.clip(probs, 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    out = np.zeros_like(probs)
    for y in range(h):
        for x in range(w):
            if not valid[y, x]:
                continue
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            for c in range(k):
                values = logit[c, ys, xs][valid[ys, xs]]
                m, v = values.mean(), values.var()
                out[c, y, x] = 1 / (1 + np.exp(-(v / (s + v) * logit[c, y, x] + s / (s + v) * m)))
            out[:, y, x] /= out[:, y, x].sum()
    return out


@pytest.fixture
def probability_map(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(9)
    band = noisy_map(rng, 61, 47, classes=3)
    probs = rng.dirichlet(np.ones(3) * 0.7, (61, 47)).transpose(2, 0, 1)
    stored = np.where(band != 255, np.floor(probs * 254 + 0.5), 255).astype(np.uint8)
    path = tmp_path / "probs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=47, height=61, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, nodata=255) as dst:
        dst.write(np.concatenate([band[None], stored]))
        for i, name in enumerate(["class", "prob_a", "prob_b", "prob_c"], start=1):
            dst.set_band_description(i, name)
    return path, band, stored


def test_filters_in_strips_equal_their_whole_map_definitions(probability_map, tmp_path, monkeypatch):
    path, band, stored = probability_map
    monkeypatch.setattr(stage, "STRIP_ROWS", 5)  # many strips, each needing its halo
    monkeypatch.setattr(stage, "SMOOTH_ROWS", 4)
    out = tmp_path / "out.tif"
    postprocess(path, out, ["class"], [0, 1, 2], PostOptions(majority=2))
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), majority_by_hand(band, 2))
    postprocess(path, out, ["class", "prob_a", "prob_b", "prob_c"], [0, 1, 2], PostOptions(smooth="bayes", smooth_window=5))
    expected = bayes_by_hand(stored / 254, band != 255, 2, 20.0)
    with rasterio.open(out) as src:
        got = src.read()
    valid = band != 255
    np.testing.assert_array_equal(got[0][valid], expected.argmax(0)[valid])
    assert np.abs(got[1:].astype(int) - np.floor(expected * 254 + 0.5))[:, valid].max() <= 1
    assert (got[:, ~valid] == 255).all()
    postprocess(path, out, ["class"], [0, 1, 2], PostOptions(majority=1, mmu_px=9))
    with rasterio.open(out) as src:
        majority = majority_by_hand(band, 1)  # the order: majority, then the unit
        np.testing.assert_array_equal(src.read(1), gdal_sieve(majority, 9, mask=majority != 255, connectivity=8))


def pixels(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def classified(trained_bundle, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("post")
    image = write_raster(root / "in.tif", synthetic_scene(300, 260, seed=4)[0], descriptions=BANDS)
    plain = root / "plain.tif"
    assert run(LULC_INFER, trained_bundle, image, "-o", plain, "--no-progress", "--probabilities").returncode == 0
    return {"root": root, "image": image, "plain": plain, "bundle": trained_bundle}


def test_infer_mmu_and_clean_equal_the_whole_image_sieve(classified, tmp_path):
    band = pixels(classified["plain"])
    expected = gdal_sieve(band, 30, mask=band != 255, connectivity=8)  # 0.3 ha of 10 m pixels
    out = tmp_path / "mmu.tif"
    result = run(LULC_INFER, classified["bundle"], classified["image"], "-o", out, "--mmu", "0.3", "--no-progress",
                 "--block-px", "128")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(pixels(out), expected)
    assert (expected != band).any()  # the unit changed something
    cleaned = tmp_path / "clean.tif"
    result = run(LULC, "clean", classified["plain"], "-o", cleaned, "--mmu-px", "30")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(pixels(cleaned), expected)
    with rasterio.open(cleaned) as a, rasterio.open(classified["plain"]) as b:
        assert a.descriptions == b.descriptions and a.count == b.count  # probability bands kept
        np.testing.assert_array_equal(a.read(2), b.read(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.qml", "clean.tif", "clean.tif.aux.xml", "mmu.qml",
                                                         "mmu.tif", "mmu.tif.aux.xml"]


def test_clean_refuses_what_it_cannot_do(classified, tmp_path):
    nothing = run(LULC, "clean", classified["plain"], "-o", tmp_path / "c.tif")
    assert nothing.returncode == 2 and "nothing to do" in nothing.stderr
    same = run(LULC, "clean", classified["plain"], "-o", classified["plain"], "--mmu-px", "5", "--overwrite")
    assert same.returncode == 1 and "is the input" in same.stderr
    classes_only = tmp_path / "classes.tif"
    assert run(LULC_INFER, classified["bundle"], classified["image"], "-o", classes_only, "--no-progress").returncode == 0
    smooth = run(LULC, "clean", classes_only, "-o", tmp_path / "c.tif", "--smooth", "bayes")
    assert smooth.returncode == 2 and "probability bands" in smooth.stderr, smooth.stderr
    assert not (tmp_path / "c.tif").exists()


@pytest.mark.slow
def test_mmu_on_dask_equals_the_single_process_map(classified, tmp_path):
    out = tmp_path / "dask.tif"
    result = run(LULC_INFER, classified["bundle"], classified["image"], "-o", out, "--mmu", "0.3", "--no-progress",
                 "--block-px", "64", "--dask", "local:2")
    assert result.returncode == 0, result.stderr
    band = pixels(classified["plain"])
    np.testing.assert_array_equal(pixels(out), gdal_sieve(band, 30, mask=band != 255, connectivity=8))


def test_vector_rasterises_back_to_the_map(classified, tmp_path):
    out, gpkg = tmp_path / "m.tif", tmp_path / "m.gpkg"
    result = run(LULC_INFER, classified["bundle"], classified["image"], "-o", out, "--vector", gpkg, "--mmu-px", "4",
                 "--no-progress")
    assert result.returncode == 0, result.stderr
    band = pixels(out)
    with fiona.open(gpkg) as src:
        features = [(dict(f.geometry), f.properties["class"], f.properties["pixels"], f.properties["area_ha"],
                     f.properties["class_name"]) for f in src]
    back = rasterize(((g, c) for g, c, *_ in features), out_shape=band.shape, transform=TRANSFORM, fill=255, dtype="uint8")
    np.testing.assert_array_equal(back, band)
    assert len(features) == sum(1 for _ in shapes(band, mask=band != 255, connectivity=4))
    assert all(area == pytest.approx(n * 0.01) for _, _, n, area, _ in features)
    names = json.loads(rasterio.open(out).tags(1)["CLASS_NAMES"])
    assert all(name == names[str(c)] for _, c, _, _, name in features)
    plain_gpkg = tmp_path / "v.gpkg"
    assert run(LULC, "vectorize", out, "-o", plain_gpkg).returncode == 0
    with fiona.open(plain_gpkg) as a:
        assert len(a) == len(features)
    simple = tmp_path / "s.gpkg"
    assert run(LULC, "vectorize", out, "-o", simple, "--simplify", "15").returncode == 0
    with fiona.open(simple) as s, fiona.open(plain_gpkg) as p:
        vertices = lambda c: sum(len(ring) for f in c for ring in f.geometry.coordinates)  # noqa: E731
        assert len(s) == len(p) and vertices(s) < vertices(p)


def test_a_map_across_strips_keeps_regions_whole(tmp_path, monkeypatch):
    """Polygonised 3 rows at a time: regions spanning many strips come out as one polygon each."""
    from lulc.runtime.postprocess import vectorize

    monkeypatch.setattr(vectorize, "STRIP_ROWS", 3)
    band = noisy_map(np.random.default_rng(4), 40, 33, cell=7, noise=0.05)
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=33, height=40, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM, nodata=255) as dst:
        dst.write(band, 1)
        dst.update_tags(1, CLASS_NAMES=json.dumps({i: f"c{i}" for i in range(4)}))
    found = list(vectorize.polygons(path, {}))
    assert len(found) == sum(1 for _ in shapes(band, mask=band != 255, connectivity=4))
    back = rasterize(((g, v) for g, v, _ in found), out_shape=band.shape, transform=TRANSFORM, fill=255, dtype="uint8")
    np.testing.assert_array_equal(back, band)
