"""Labels onto the image grid: rasterization, reprojection, AOI, grid checks and label errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from rasterio.warp import transform as warp_transform

from lulc.runtime.errors import LulcError
from lulc.training.labels import IGNORE, aoi_mask, prepare_labels, rasterize_vector
from lulc.training.sources import RasterStack


def utm_box_as_wgs84(x0, y0, x1, y1) -> list:
    """A UTM 33N rectangle as a lon/lat ring, so the labels need reprojecting."""
    xs, ys = [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", xs, ys)
    return [list(map(list, zip(lon, lat)))]


def write_geojson(path, features) -> str:
    """features: (geometry, properties) pairs; GeoJSON is lon/lat (EPSG:4326)."""
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": g, "properties": p} for g, p in features]}))
    return str(path)


@pytest.fixture
def vector(tmp_path):
    # image: x 500000..501920, y 5798720..5800000 (10 m pixels, 192 x 128)
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", [500505], [5799495])
    return write_geojson(tmp_path / "labels.geojson", [
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(500000, 5799500, 500500, 5800000)}, {"class": "forest"}),
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(501000, 5798720, 501500, 5799000)}, {"class": "water"}),
        ({"type": "Point", "coordinates": [lon[0], lat[0]]}, {"class": "water"}),
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(600000, 5700000, 600500, 5700500)}, {"class": "forest"}),
    ])


def test_rasterize_reprojects_burns_points_and_reports_outside(scene, vector, tmp_path, caplog):
    out = tmp_path / "burnt.tif"
    with caplog.at_level("WARNING"), RasterStack([str(scene["image"])]) as stack:
        names = rasterize_vector(vector, stack, out)
    assert names == ["forest", "water"]
    assert "1 of 4 label features lie outside" in caplog.text
    with rasterio.open(out) as src, rasterio.open(scene["image"]) as img:
        assert (src.crs, src.transform, src.shape) == (img.crs, img.transform, img.shape)
        lab = src.read(1)
    assert (lab[:50, :50] == 0).mean() > 0.95  # forest square, top-left 500 m
    assert (lab[100:, 100:150] == 1).mean() > 0.9  # water rectangle
    assert lab[50, 50] == 1  # the point burns one pixel
    assert lab[60:90, 60:90].max() == IGNORE  # nothing labelled in between


def test_vector_errors(scene, tmp_path):
    far = write_geojson(tmp_path / "far.geojson", [
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(600000, 5700000, 600500, 5700500)}, {"class": "a"})])
    nocol = write_geojson(tmp_path / "nocol.geojson", [
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(500000, 5799500, 500500, 5800000)}, {"kind": "a"})])
    with RasterStack([str(scene["image"])]) as stack:
        with pytest.raises(LulcError, match="overlap"):
            rasterize_vector(far, stack, tmp_path / "x.tif")
        with pytest.raises(LulcError, match="--label-column"):
            rasterize_vector(nocol, stack, tmp_path / "x.tif")
        with pytest.raises(LulcError, match="not in the class list"):
            rasterize_vector(nocol, stack, tmp_path / "x.tif", column="kind", class_names=["b"])
        (tmp_path / "broken.gpkg").write_bytes(b"not a geopackage")
        with pytest.raises(LulcError, match="cannot read vector labels"):
            rasterize_vector(tmp_path / "broken.gpkg", stack, tmp_path / "x.tif")


def test_aoi_blanks_labels_outside(scene, tmp_path):
    aoi = write_geojson(tmp_path / "aoi.geojson", [
        ({"type": "Polygon", "coordinates": utm_box_as_wgs84(500000, 5798720, 500960, 5800000)}, {})])
    with RasterStack([str(scene["image"])]) as stack:
        assert aoi_mask(aoi, stack)[:, :90].all() and not aoi_mask(aoi, stack)[:, 100:].any()
        path, classes = prepare_labels(scene["labels"], stack, tmp_path, aoi=aoi)
    with rasterio.open(path) as src:
        lab = src.read(1)
    assert (lab[:, 100:] == IGNORE).all() and (lab[:, 10:90] != IGNORE).all()
    assert [c["name"] for c in classes] == ["crop", "grass", "water"]


def test_label_raster_on_other_grid_needs_align(scene, tmp_path):
    with rasterio.open(scene["labels"]) as src:
        lab = src.read(1)
    shifted = write_raster(tmp_path / "labels.tif", lab[::2, ::2].copy(), nodata=255,
                           transform=rasterio.transform.from_origin(500000, 5800000, 20, 20))
    (tmp_path / "classes.json").write_text(scene["classes"].read_text())
    with RasterStack([str(scene["image"])]) as stack:
        with pytest.raises(LulcError, match="--align"):
            prepare_labels(shifted, stack, tmp_path)
        (tmp_path / "work").mkdir()
        path, _ = prepare_labels(shifted, stack, tmp_path / "work", align=True)
    with rasterio.open(path) as src:
        assert src.shape == (128, 192)
        assert np.array_equal(src.read(1)[::2, ::2], lab[::2, ::2])


def test_label_values_outside_class_list_and_empty_labels(scene, tmp_path):
    classes = tmp_path / "two.json"
    classes.write_text('[{"name": "a"}, {"name": "b"}]')
    with RasterStack([str(scene["image"])]) as stack:
        with pytest.raises(LulcError, match=r"label value\(s\) 2 are not in the class list"):
            prepare_labels(scene["labels"], stack, tmp_path, classes_file=classes)
        empty = write_raster(tmp_path / "empty.tif", np.full((128, 192), 255, np.uint8), nodata=255)
        with pytest.raises(LulcError, match="empty"):
            prepare_labels(empty, stack, tmp_path, classes_file=classes)
