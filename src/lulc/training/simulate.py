"""A simulated, labelled multi-temporal scene: crop phenology curves driving per-class spectra.

No package registry ships labelled multi-temporal imagery (see the README), so supervised
accuracy of the temporal models is measured on this simulation, and the README says so.
What it models, and why:

* Fields: rectangles of 10-24 px, one class each, ~8 % left unlabeled (label 255).
* Greenness per class follows a double-logistic season (start/end day of year, amplitude
  over a base); each field shifts start and end by ~N(0, 12) days and scales its amplitude,
  as sowing dates and vigour vary between farms.
* Reflectance per band is a mix of a background (soil, litter, shade, water) and a green
  vegetation end member, weighted by greenness, plus per-field brightness (±20 %) and pixel
  noise; crops and grass share one soil background.
  On any single date several classes overlap (cereal vs. grass vs. maize in early summer);
  across the season they separate. That is the point the simulation makes, and the reason
  the seasonal classes need a temporal model.
* Clouds: blobs on most dates (Fmask code 4) with bright tops, and Landsat-7-like stripe
  gaps (Fmask 255, nodata) on some dates; written as a per-date ``fmask`` band that
  ``lulc stack --mask-band fmask`` turns into missing observations.

Bands default to red / NIR / SWIR1 (Landsat b3 / b4 / b5); ``like`` copies the dates and
band names of a real stack, so a model trained here can run on that stack.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from lulc.runtime.tools.timestack import StackInfo, build_stack, read_stack_info

NODATA = -9999
CLOUD, FILL = 4, 255


@dataclass(frozen=True)
class Phenology:
    name: str
    color: tuple[int, int, int]
    start: float  # day of year of green-up (logistic midpoint)
    end: float  # day of year of senescence / harvest
    amplitude: float
    base: float  # greenness outside the season
    background: tuple[float, float, float]  # red, nir, swir1 reflectance without green cover
    seasonal: bool  # separable only over the season (reported separately)


#: green vegetation end member (red, nir, swir1)
VEGETATION = (0.035, 0.45, 0.17)
#: one bare-soil background for all crops and grass: only the timing of green cover tells them apart
SOIL = (0.16, 0.23, 0.30)
CLASSES = (
    Phenology("winter-cereal", (230, 200, 80), 85, 195, 0.85, 0.05, SOIL, True),
    Phenology("maize", (250, 150, 40), 165, 265, 0.9, 0.0, SOIL, True),
    Phenology("grassland", (140, 210, 90), 100, 290, 0.5, 0.3, SOIL, True),
    Phenology("deciduous-forest", (40, 140, 60), 125, 285, 0.65, 0.1, (0.06, 0.15, 0.14), True),
    Phenology("conifer-forest", (20, 80, 40), 100, 300, 0.05, 0.5, (0.04, 0.12, 0.10), False),
    Phenology("water", (40, 100, 220), 0, 1, 0.0, 0.0, (0.05, 0.02, 0.01), False),
)


def season_dates(n: int, year: int = 2020) -> list[str]:
    """``n`` dates evenly spread from early March to late November."""
    return [(date(year, 1, 1) + timedelta(days=int(d) - 1)).isoformat() for d in np.linspace(60, 330, n)]


def greenness(doy: int, start: np.ndarray, end: np.ndarray, amplitude: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Double-logistic season: base + amplitude between green-up and senescence, clipped to 0..1."""
    rise = 1.0 / (1.0 + np.exp(-(doy - start) / 8.0))
    fall = 1.0 / (1.0 + np.exp(-(doy - end) / 8.0))
    return np.clip(base + amplitude * (rise - fall), 0.0, 1.0)


def _fields(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Field id per pixel: rows of random height cut into fields of random width."""
    ids = np.zeros((height, width), dtype=np.int32)
    y, n = 0, 0
    while y < height:
        h = int(rng.integers(10, 25))
        x = 0
        while x < width:
            w = int(rng.integers(10, 25))
            ids[y : y + h, x : x + w] = n
            n, x = n + 1, x + w
        y += h
    return ids


def _cloud_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Blocky cloud blobs covering a random share (0-70 %) of a date; a third of dates clear."""
    if rng.random() < 0.33:
        return np.zeros((height, width), dtype=bool)
    cells = rng.random((height // 8 + 1, width // 8 + 1))
    field = np.kron(cells, np.ones((8, 8)))[:height, :width]
    return field < rng.uniform(0.05, 0.7)


def simulate_series(output: str | Path, height: int = 96, width: int = 96, dates: list[str] | None = None,
                    bands: list[str] | None = None, like: str | Path | None = None, seed: int = 0,
                    noise: float = 0.02) -> dict:
    """Write per-date rasters, a label raster, classes.json and the masked stack; return paths."""
    out = Path(output)
    if like is not None:
        ref: StackInfo = read_stack_info(like)
        dates, bands = ref.dates, ref.bands
    dates = dates or season_dates(12)
    bands = bands or ["red", "nir", "swir1"]
    if len(bands) != 3:
        raise ValueError(f"the simulation has three bands (red, nir, swir1), not {len(bands)}")
    rng = np.random.default_rng(seed)
    fields = _fields(height, width, rng)
    n_fields = fields.max() + 1
    cls = rng.choice(len(CLASSES), n_fields, p=[0.2, 0.2, 0.2, 0.15, 0.15, 0.1])
    truth = cls[fields]  # every pixel's class, also where the labels leave it out
    labels = truth.astype(np.uint8)
    labels[np.isin(fields, np.flatnonzero(rng.random(n_fields) < 0.08))] = 255
    per_class = {k: np.array([getattr(c, k) for c in CLASSES])[truth] for k in ("start", "end", "amplitude", "base")}
    start = per_class["start"] + rng.normal(0, 12, n_fields)[fields]
    end = per_class["end"] + rng.normal(0, 12, n_fields)[fields]
    amplitude = per_class["amplitude"] * rng.uniform(0.85, 1.15, n_fields)[fields]
    bright = rng.uniform(0.8, 1.2, n_fields)[fields]
    background = np.array([c.background for c in CLASSES])[truth]  # (H, W, 3)
    veg = np.array(VEGETATION)
    transform = from_origin(600000, 5700000, 10, 10)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 4, "dtype": "int16",
               "crs": "EPSG:32633", "transform": transform, "nodata": NODATA}
    (out / "dates").mkdir(parents=True, exist_ok=True)
    for i, iso in enumerate(dates):
        doy = date.fromisoformat(iso).timetuple().tm_yday
        g = greenness(doy, start, end, amplitude, per_class["base"])[..., None]
        refl = (background * (1 - g) + veg * g) * bright[..., None] + rng.normal(0, noise, (height, width, 3))
        data = np.clip(refl * 1e4, 0, 10000).astype(np.int16).transpose(2, 0, 1)
        fmask = np.where(truth == len(CLASSES) - 1, 1, 0).astype(np.int16)  # Fmask 1 = clear water
        cloud = _cloud_mask(height, width, rng)
        data[:, cloud] = rng.integers(3000, 6000)  # bright cloud tops: wrong, but not nodata
        fmask[cloud] = CLOUD
        if i % 4 == 3:  # scan-line-corrector-off stripes
            stripes = (np.arange(width) + i) % 9 < 2
            data[:, :, stripes] = NODATA
            fmask[:, stripes] = FILL
        path = out / "dates" / f"sim_{iso.replace('-', '')}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.concatenate([data, fmask[None]]))
            for b, name in enumerate([*bands, "fmask"], start=1):
                dst.set_band_description(b, name)
    with rasterio.open(out / "labels.tif", "w", **{**profile, "count": 1, "dtype": "uint8", "nodata": 255}) as dst:
        dst.write(labels, 1)
    classes = [{"id": i, "name": c.name, "color": list(c.color)} for i, c in enumerate(CLASSES)]
    (out / "classes.json").write_text(json.dumps(classes, indent=2))
    stack = build_stack([out / "dates"], out / "stack", bands=bands, mask_band="fmask", mask_valid=(0, 1),
                        overwrite=True)
    return {"stack": stack.path, "labels": out / "labels.tif", "classes": out / "classes.json",
            "seasonal": [c.name for c in CLASSES if c.seasonal]}

