"""`lulc sample-design`, `lulc assess` and `lulc suggest-samples` end to end: real processes
on small maps made here (and on maps from lulc-infer and lulc change), bad input refused in one
line, and a sparse 100 000² map assessed with flat memory."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.assess.estimators import olofsson, stehman

LULC = str(Path(sys.executable).with_name("lulc"))
NAMES = {0: "forest", 1: "crop", 2: "water"}
TRANSFORM = from_origin(500000, 5800000, 10, 10)


def lulc(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([LULC, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def one_line(result, *needles) -> None:
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def class_map(path: Path, data: np.ndarray, names=NAMES, **profile) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint8",
                       crs="EPSG:32633", transform=TRANSFORM, nodata=255, tiled=True, **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(1, CLASS_NAMES=json.dumps(names))
    return path


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> dict:
    """A 240 x 200 truth, a map with errors and a nodata corner."""
    root = tmp_path_factory.mktemp("assess")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:240, 0:200]
    truth = np.where(xx < 90, 0, np.where(yy < 120, 1, 2)).astype(np.uint8)
    wrong = rng.random(truth.shape) < 0.15
    mapped = np.where(wrong, (truth + 1) % 3, truth).astype(np.uint8)
    mapped[:20, :20] = 255
    return {"root": root, "truth": truth, "mapped": mapped, "map": class_map(root / "map.tif", mapped),
            "truth_tif": class_map(root / "truth.tif", truth)}


def interpret(points: Path, truth: np.ndarray, out: Path, names=NAMES) -> Path:
    """Simulated interpretation: every point gets the true class at its pixel."""
    with fiona.open(points) as src:
        schema, crs = src.schema, src.crs
        records = []
        for f in src:
            props = dict(f.properties)
            row, col = rasterio.transform.rowcol(TRANSFORM, *f.geometry.coordinates)
            props["class"] = names[int(truth[row, col])]
            records.append({"geometry": f.geometry, "properties": props})
    with fiona.open(out, "w", driver="GPKG", schema=schema, crs=crs) as dst:
        dst.writerecords(records)
    return out


def test_design_then_assess_matches_the_estimator_on_the_samples_counts(truth, tmp_path):
    points = tmp_path / "points.gpkg"
    result = lulc("sample-design", truth["map"], "-o", points, "--target-se", "0.02", "--expected-ua", "0.85",
                  "--expected-ua", "water=0.9", "--min-per-class", "40", "--seed", "7")
    assert result.returncode == 0, result.stderr
    with fiona.open(points) as src:
        feats = list(src)
    counts = np.bincount([f.properties["map_value"] for f in feats], minlength=3)
    assert "points drawn (seed 7)" in result.stdout and counts.min() >= 40 and len(feats) == counts.sum()
    for f in feats:  # every point is the centre of a classified pixel of the class it records
        row, col = rasterio.transform.rowcol(TRANSFORM, *f.geometry.coordinates)
        assert truth["mapped"][row, col] == f.properties["map_value"] and f.properties["class"] in ("", None)
        assert f.properties["map_class"] == NAMES[f.properties["map_value"]]
    again = tmp_path / "again.gpkg"
    assert lulc("sample-design", truth["map"], "-o", again, "--target-se", "0.02", "--expected-ua", "0.85",
                "--expected-ua", "water=0.9", "--min-per-class", "40", "--seed", "7").returncode == 0
    with fiona.open(again) as src:
        assert [f.geometry.coordinates for f in src] == [f.geometry.coordinates for f in feats]

    reference = interpret(points, truth["truth"], tmp_path / "reference.gpkg")
    report = tmp_path / "assess.json"
    result = lulc("assess", truth["map"], reference, "--json", report)
    assert result.returncode == 0, result.stderr
    assert "overall accuracy" in result.stdout and "Olofsson" in result.stdout
    figures = json.loads(report.read_text())
    # the same interpretation read from a reference layer at the designed points
    from_layer = tmp_path / "layer.json"
    assert lulc("assess", truth["map"], points, "--labels-from", truth["truth_tif"], "--json", from_layer).returncode == 0
    layer = json.loads(from_layer.read_text())
    assert layer["classes"] == figures["classes"] and layer["overall_accuracy"] == figures["overall_accuracy"]
    n = np.zeros((3, 3), np.int64)
    for f in feats:
        row, col = rasterio.transform.rowcol(TRANSFORM, *f.geometry.coordinates)
        n[f.properties["map_value"], truth["truth"][row, col]] += 1
    mapped = np.bincount(truth["mapped"][truth["mapped"] < 3].ravel(), minlength=3)
    est = olofsson(n, mapped)
    assert figures["overall_accuracy"] == pytest.approx(est.overall) and figures["n_samples"] == len(feats)
    assert figures["overall_accuracy_se"] == pytest.approx(est.overall_se)
    for k, name in NAMES.items():
        c = figures["classes"][name]
        assert c["users_accuracy"] == pytest.approx(est.users[k])
        assert c["producers_accuracy_se"] == pytest.approx(est.producers_se[k])
        assert c["area_ha"] == pytest.approx(est.area_proportion[k] * mapped.sum() * 0.01)
        assert c["area_ha_ci95"] == pytest.approx([c["area_ha"] - 1.96 * c["area_ha_se"], c["area_ha"] + 1.96 * c["area_ha_se"]])
        assert c["mapped_area_ha"] == pytest.approx(mapped[k] * 0.01) and c["n_samples"] == n[k].sum()
        # the truth lies inside the interval here (seeded): the estimate corrects the map's bias
        true_ha = (truth["truth"][truth["mapped"] < 3] == k).sum() * 0.01
        assert c["area_ha_ci95"][0] <= true_ha <= c["area_ha_ci95"][1]


def test_label_raster_polygons_and_csv_references(truth, tmp_path):
    """The truth raster as reference (every labelled pixel a unit) gives the pixel-count error
    matrix; polygons count the pixels they cover; a CSV in another CRS is reprojected and said so."""
    result = lulc("assess", truth["map"], truth["truth_tif"], "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "r.json").read_text())
    valid = truth["mapped"] < 3
    assert figures["overall_accuracy"] == pytest.approx((truth["mapped"] == truth["truth"])[valid].mean())
    assert figures["skipped"]["on_nodata"] == 400

    def square(col: int, row: int, size: int) -> dict:  # map px -> a polygon over size x size pixels
        x0, y0 = rasterio.transform.xy(TRANSFORM, row, col, offset="ul")
        x1, y1 = x0 + size * 10, y0 - size * 10
        return {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}

    poly = tmp_path / "poly.gpkg"
    squares = [(square(10, 10, 30), "forest"), (square(120, 30, 20), "crop"), (square(130, 160, 25), "water")]
    with fiona.open(poly, "w", driver="GPKG", crs="EPSG:32633",
                    schema={"geometry": "Polygon", "properties": {"ref": "str"}}) as dst:
        dst.writerecords({"geometry": g, "properties": {"ref": r}} for g, r in squares)
    result = lulc("assess", truth["map"], poly, "--class-field", "ref", "--json", tmp_path / "p.json")
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "p.json").read_text())
    covered = [truth["mapped"][10:40, 10:40], truth["mapped"][30:50, 120:140], truth["mapped"][160:185, 130:155]]
    assert figures["n_samples"] == sum(int((c < 3).sum()) for c in covered)  # one unit per covered classified pixel
    assert figures["skipped"]["on_nodata"] == int((covered[0] == 255).sum()) == 100
    assert figures["classes"]["water"]["n_reference"] == int((covered[2] < 3).sum())

    lonlat = tmp_path / "lonlat.csv"
    xs, ys = rasterio.transform.xy(TRANSFORM, [30, 60, 200, 150], [30, 150, 150, 10])
    lon, lat = warp_points("EPSG:32633", "EPSG:4326", xs, ys)
    with open(lonlat, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lon", "lat", "class"])
        for row in zip(lon, lat, ["forest", "crop", "water", "forest"]):
            w.writerow(row)
    result = lulc("assess", truth["map"], lonlat, "--crs", "EPSG:4326", "--x-field", "lon", "--y-field", "lat")
    assert result.returncode == 0, result.stderr
    assert "reprojected lonlat.csv from EPSG:4326 to the map's EPSG:32633" in result.stderr


@pytest.mark.parametrize("case, needles", [
    ("empty", ("holds no features",)),
    ("outside", ("no reference sample of", "4 outside the map")),
    ("unknown", ("reference class 'shrubland' (2 samples", "is not a class of the map")),
    ("no-field", ("has no field 'klasse'",)),
])
def test_bad_references_are_one_line(truth, tmp_path, case, needles):
    path = tmp_path / f"{case}.csv"
    rows = {"empty": [], "outside": [(0, 0, "forest")] * 4,
            "unknown": [(500105, 5799895, "shrubland"), (500505, 5799495, "shrubland"), (500905, 5799095, "forest")],
            "no-field": [(500105, 5799895, "forest")]}[case]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y", "class"])
        w.writerows(rows)
    extra = ("--class-field", "klasse") if case == "no-field" else ()
    out = tmp_path / "a.json"
    one_line(lulc("assess", truth["map"], path, "--json", out, *extra), *needles)
    assert not out.exists()


def test_stehman_strata_other_than_the_map(truth, tmp_path):
    """A sample drawn on two regions (left/right halves): the Stehman estimator on the
    counts per region, map class and reference class."""
    strata = np.zeros_like(truth["mapped"])
    strata[:, 100:] = 1
    strata_path = class_map(tmp_path / "strata.tif", strata, names={0: "west", 1: "east"})
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 240, 300), rng.integers(0, 200, 300)
    xs, ys = rasterio.transform.xy(TRANSFORM, rows, cols)
    with open(tmp_path / "ref.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y", "class"])
        for x, y, r, c in zip(xs, ys, rows, cols):
            w.writerow([x, y, NAMES[int(truth["truth"][r, c])]])
    result = lulc("assess", truth["map"], tmp_path / "ref.csv", "--strata", strata_path, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "s.json").read_text())
    counts = np.zeros((2, 3, 3), np.int64)
    for r, c in zip(rows, cols):
        if truth["mapped"][r, c] < 3:
            counts[strata[r, c], truth["mapped"][r, c], truth["truth"][r, c]] += 1
    est = stehman(counts, np.bincount(strata.ravel(), minlength=2))
    assert "Stehman" in figures["estimator"] and figures["overall_accuracy"] == pytest.approx(est.overall)
    assert figures["classes"]["water"]["producers_accuracy_se"] == pytest.approx(est.producers_se[2])
    assert figures["skipped"]["on_nodata"] == int((truth["mapped"][rows, cols] == 255).sum())


def test_lulc_infer_and_change_maps_are_assessed(trained_bundle, tmp_path):
    image = write_raster(tmp_path / "in.tif", synthetic_scene(96, 96, seed=2)[0], descriptions=BANDS)
    for name in ("a", "b"):
        assert lulc("infer", trained_bundle, image, "-o", tmp_path / f"{name}.tif", "--no-progress").returncode == 0
    assert lulc("change", tmp_path / "a.tif", tmp_path / "b.tif", "-o", tmp_path / "change.tif").returncode == 0
    for target in ("a.tif", "change.tif"):
        points = tmp_path / f"{target}.csv"
        assert lulc("sample-design", tmp_path / target, "-o", points, "-n", "30", "--min-per-class", "2").returncode == 0
        with open(points) as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:  # the interpreter agrees with the map
            row["class"] = row["map_class"]
        with open(points, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        result = lulc("assess", tmp_path / target, points, "--json", tmp_path / f"{target}.json")
        assert result.returncode == 0, result.stderr
        figures = json.loads((tmp_path / f"{target}.json").read_text())
        assert figures["overall_accuracy"] == pytest.approx(1.0)
        if target == "change.tif":
            assert all(" -> " in name for name in figures["classes"])


def peak_rss_mb(args: list) -> tuple[subprocess.CompletedProcess, float]:
    proc = subprocess.Popen([LULC, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), out, err), usage.ru_maxrss / 1024


@pytest.mark.slow
def test_a_sparse_100000_px_map_is_assessed_with_flat_memory(truth, tmp_path):
    """10^10 pixels (10 GB as uint8, never written but for a few blocks): counting and
    sampling stream it, so peak memory stays that of the 240 x 200 map's run."""
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=TRANSFORM, nodata=255, tiled=True, blockxsize=512, blockysize=512,
                       sparse_ok=True, BIGTIFF="YES") as dst:
        for i in range(6):
            window = rasterio.windows.Window(i * 15_000, i * 15_000, 512, 512)
            dst.write(np.full((512, 512), i % 3, np.uint8), 1, window=window)
        dst.update_tags(1, CLASS_NAMES=json.dumps(NAMES))
    assert huge.stat().st_size < 10 * 2**20
    rss = {}
    for name, target in (("small", truth["map"]), ("huge", huge)):
        points = tmp_path / f"{name}.gpkg"
        result, _ = peak_rss_mb(["sample-design", target, "-o", points, "-n", "60", "--min-per-class", "20"])
        assert result.returncode == 0, result.stderr
        with fiona.open(points) as src:
            records = [{"geometry": f.geometry, "properties": {**dict(f.properties), "class": f.properties["map_class"]}}
                       for f in src]
            schema, crs = src.schema, src.crs
        with fiona.open(tmp_path / f"{name}-ref.gpkg", "w", driver="GPKG", schema=schema, crs=crs) as dst:
            dst.writerecords(records)
        result, rss[name] = peak_rss_mb(["assess", target, tmp_path / f"{name}-ref.gpkg", "--json", tmp_path / f"{name}.json"])
        assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "huge.json").read_text())
    assert figures["classes"]["forest"]["mapped_area_ha"] == pytest.approx(2 * 512 * 512 * 0.01)
    assert rss["huge"] < rss["small"] + 50, rss


def test_suggest_samples_are_the_most_uncertain_pixels_spread_out(trained_bundle, tmp_path):
    """Against an independent computation on the --probabilities map lulc-infer writes: the
    first point is the most uncertain pixel (normalised entropy of the uint8 probabilities), all
    points are classified pixels at least --min-distance apart, in falling uncertainty."""
    image = write_raster(tmp_path / "in.tif", synthetic_scene(96, 128, seed=8)[0], descriptions=BANDS)
    out = tmp_path / "next.gpkg"
    result = lulc("suggest-samples", trained_bundle, image, "-n", "12", "-o", out, "--min-distance", "150",
                  "--no-progress")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "next.gpkg"]  # the work map is gone
    assert lulc("infer", trained_bundle, image, "-o", tmp_path / "p.tif", "--probabilities", "--no-progress").returncode == 0
    with rasterio.open(tmp_path / "p.tif") as src:
        classes, probs = src.read(1), src.read(list(range(2, src.count + 1))).astype(np.float64)
    p = probs / probs.sum(axis=0)
    entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(axis=0) / np.log(p.shape[0])
    entropy[classes == 255] = -1
    with fiona.open(out) as src:
        points = [(f.geometry.coordinates, dict(f.properties)) for f in src]
    assert len(points) == 12
    values = [props["uncertainty"] for _, props in points]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(entropy.max(), abs=1e-6)
    for i, ((x, y), props) in enumerate(points):
        row, col = rasterio.transform.rowcol(TRANSFORM, x, y)
        assert props["uncertainty"] == pytest.approx(entropy[row, col], abs=1e-6)
        assert props["map_value"] == classes[row, col] and props["class"] in ("", None)
        for (x2, y2), _ in points[:i]:
            assert np.hypot(x - x2, y - y2) >= 150
