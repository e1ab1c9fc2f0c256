"""Labels onto the image grid: rasterization, reprojection, AOI, grid checks and label errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from conftest import write_raster
from lulc.runtime.core.errors import LulcError
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


def _classes_of(labels, tmp_path, **kw):
    """prepare_labels on the scene grid: (class dicts, staged class-id plane)."""
    tmp_path.mkdir(exist_ok=True)
    with RasterStack([str(labels.parent / "image.tif")]) as stack:
        path, classes = prepare_labels(labels, stack, tmp_path, **kw)
    with rasterio.open(path) as src:
        return classes, src.read(1)


@pytest.fixture
def coded(scene, tmp_path):
    """The scene's labels recoded 1..7 (3 and 6 absent), beside a copy of its image."""
    shutil.copy(scene["image"], tmp_path / "image.tif")
    with rasterio.open(scene["labels"]) as src:
        base = src.read(1)
    codes = np.array([1, 2, 4, 5, 7], np.uint8)
    plane = np.where(base == 255, 255, codes[(base + np.arange(128)[:, None] // 64 * 3) % 5]).astype(np.uint8)
    return plane


def test_class_ids_come_from_the_values_present(coded, tmp_path):
    path = write_raster(tmp_path / "coded.tif", coded, nodata=255)
    classes, ids = _classes_of(path, tmp_path / "w1")
    assert [c["value"] for c in classes] == [1, 2, 4, 5, 7]  # no phantom class_0, no class_3
    assert [c["name"] for c in classes] == ["class_1", "class_2", "class_4", "class_5", "class_7"]
    assert [c["id"] for c in classes] == [0, 1, 2, 3, 4]
    lookup = np.full(256, 255, np.uint8)
    lookup[[1, 2, 4, 5, 7]] = np.arange(5)
    assert np.array_equal(ids, lookup[coded])


def test_names_and_colours_from_colour_table_and_category_names(coded, tmp_path):
    path = write_raster(tmp_path / "coded.tif", coded, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {1: (10, 20, 30, 255), 2: (40, 50, 60, 255), 4: (1, 2, 3, 255), 5: (4, 5, 6, 255),
                               7: (7, 8, 9, 255)})
    names = ["", "forest", "water", "", "urban", "crop", "", "grass"]
    categories = "".join(f"<Category>{n}</Category>" for n in names)
    Path(f"{path}.aux.xml").write_text(f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{categories}'
                                       "</CategoryNames></PAMRasterBand></PAMDataset>")
    classes, _ = _classes_of(path, tmp_path / "w")
    assert [(c["value"], c["name"]) for c in classes] == [(1, "forest"), (2, "water"), (4, "urban"), (5, "crop"), (7, "grass")]
    assert classes[0]["color"] == (10, 20, 30) and classes[4]["color"] == (7, 8, 9)


def test_names_values_and_colours_from_a_raster_attribute_table(coded, tmp_path):
    """A uint16 raster coded like CORINE, described by a GDAL RAT (value, name, RGB columns)."""
    codes = {1: 111, 2: 211, 4: 311, 5: 411, 7: 511}
    plane = np.where(coded == 255, 0, np.vectorize(lambda v: codes.get(int(v), 0))(coded)).astype(np.uint16)
    path = write_raster(tmp_path / "corine.tif", plane, nodata=0)
    fields = "".join(f"<FieldDefn index=\"{i}\"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>"
                     for i, (n, t, u) in enumerate([("Value", 0, 5), ("Label", 2, 2), ("R", 0, 6), ("G", 0, 7), ("B", 0, 8)]))
    rows = "".join(f'<Row index="{i}"><F>{v}</F><F>land {v}</F><F>{i}</F><F>{2 * i}</F><F>{3 * i}</F></Row>'
                   for i, v in enumerate(sorted(codes.values())))
    Path(f"{path}.aux.xml").write_text(f'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">'
                                       f"{fields}{rows}</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>")
    classes, ids = _classes_of(path, tmp_path / "w")
    assert [c["value"] for c in classes] == [111, 211, 311, 411, 511]
    assert [c["name"] for c in classes] == [f"land {v}" for v in (111, 211, 311, 411, 511)]
    assert classes[2]["color"] == (2, 4, 6)
    assert (ids[plane == 0] == IGNORE).all() and np.array_equal(np.unique(ids[plane != 0]), np.arange(5))


def test_class_file_values_and_known_classes(coded, tmp_path):
    path = write_raster(tmp_path / "coded.tif", coded, nodata=255)
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps([{"id": v, "name": n} for v, n in
                                  [(7, "grass"), (1, "forest"), (2, "water"), (3, "bare"), (4, "urban"), (5, "crop")]]))
    classes, ids = _classes_of(path, tmp_path / "w", classes_file=listed)
    assert [(c["id"], c["value"]) for c in classes] == [(0, 7), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]  # file order
    assert (ids[coded == 7] == 0).all() and (ids[coded == 5] == 5).all()
    # evaluation imposes the bundle's classes: a region with fewer classes keeps the same ids
    only = np.where(np.isin(coded, [1, 2]), coded, 255).astype(np.uint8)
    known, ids = _classes_of(write_raster(tmp_path / "only.tif", only, nodata=255), tmp_path / "w2", known=classes)
    assert known == classes and set(np.unique(ids)) == {1, 2, 255}
    with pytest.raises(LulcError, match="single class"):
        _classes_of(write_raster(tmp_path / "one.tif", np.where(coded == 1, 1, 255).astype(np.uint8), nodata=255),
                    tmp_path / "w3")


def test_per_file_nodata_and_label_values_reach_the_provenance(scene, tmp_path):
    """Two single-band-group files with different nodata values train as one stack; each file's
    nodata is recorded for the runtime, with the label values behind the class ids."""
    from lulc.training.config import TrainConfig
    from lulc.training.inputs import prepare_samples

    with rasterio.open(scene["image"]) as src:
        image = src.read().astype(np.int32)
    a, b = image[:2].copy(), image[2:].copy()
    a[:, :8, :8], b[:, -8:, -8:] = -99999, -32768
    write_raster(tmp_path / "a.tif", a, nodata=-99999, descriptions=["B02", "B03"])
    write_raster(tmp_path / "b.tif", b, nodata=-32768, descriptions=["B04", "B08"])
    cfg = TrainConfig(image=[str(tmp_path / "a.tif"), str(tmp_path / "b.tif")], labels=str(scene["labels"]),
                      classes=str(scene["classes"]), tile=32, split_block=32)
    samples = prepare_samples(cfg, tmp_path)
    assert samples.data["nodata"] == [-99999, -32768] and samples.data["bands_per_image"] == [2, 2]
    assert [c["value"] for c in samples.classes] == [0, 1, 2]
    assert not samples.tiles.valid[(samples.tiles.origins == 0).all(axis=1)][0, :8, :8].any()
