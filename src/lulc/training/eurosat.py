"""Scene-classification folders in the EuroSAT layout: ``DIR/<class name>/<patch>.tif|jpg|png``.

Patches carry no common map, so the split is a seeded random split of files, stratified by
class (recorded as such in the bundle); statistics stream over the training files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.enums import ColorInterp

from lulc.runtime.core.errors import LulcError
from lulc.runtime.core.manifest import InputSpec
from lulc.runtime.indices import append_indices, index_bands
from lulc.training.classes import class_list
from lulc.training.data import SPLITS, StatsAccumulator, TileSet
from lulc.training.sources import open_raster, valid_mask

SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png"}
_COLOR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


def _band_names(src) -> list[str]:
    """Band descriptions, else the colour interpretation (JPEG/PNG are red/green/blue)."""
    return [d or _COLOR_NAMES.get(ci, f"band{i}") for i, (d, ci) in enumerate(zip(src.descriptions, src.colorinterp), 1)]


def list_patches(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    if not root.is_dir():
        raise LulcError(f"--data {root} is not a folder (expected one sub-folder of patches per class)")
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    files = [(f, i) for i, n in enumerate(names) for f in sorted((root / n).iterdir()) if f.suffix.lower() in SUFFIXES]
    if len(names) < 2 or not files:
        raise LulcError(f"--data {root} needs at least two class folders with .tif/.jpg/.png patches")
    return names, files


def split_files(labels: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Per-class seeded shuffle cut at the fractions; every split gets at least one patch."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.int64)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_val, n_test = round(fractions[1] * len(idx)), round(fractions[2] * len(idx))
        split[idx[:n_val]] = 1
        split[idx[n_val : n_val + n_test]] = 2
    for i, name in enumerate(SPLITS):
        if not (split == i).any():
            raise LulcError(f"too few patches: the {name} split got none; add patches to the class folders")
    return split


def load_folder(root: str, seed: int, derived: list[str] | None = None,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)):
    """(TileSet with constant label maps, training statistics, InputSpec, class list)."""
    names, files = list_patches(Path(root))
    labels = np.array([k for _, k in files])
    split = split_files(labels, fractions, seed)
    xs, vs, spec = [], [], None
    with open_raster(files[0][0], "patch") as src:
        spec = InputSpec(bands=_band_names(src), dtype=src.dtypes[0], nodata=src.nodata, derived=list(derived or []))
        shape = (src.count, src.height, src.width)
    index_bands(spec.bands, spec.derived)
    stats = StatsAccumulator(len(spec.channels), seed)
    for (path, _), s in zip(files, split):
        with open_raster(path, "patch") as src:
            if (src.count, src.height, src.width) != shape:
                raise LulcError(f"{path} is {src.count} x {src.height} x {src.width}, but patches must all be "
                                f"{shape[0]} bands x {shape[1]} x {shape[2]} px like {files[0][0].name}")
            raw = append_indices(src.read(out_dtype=np.float32), spec.bands, spec.derived)
            valid = valid_mask(raw[: shape[0]], src.nodata)
        if s == 0:
            stats.add(raw, valid)
        xs.append(raw.transpose(1, 2, 0))
        vs.append(valid)
    y = np.broadcast_to(labels[:, None, None], (len(files), shape[1], shape[2])).astype(np.uint8)
    record = {"method": "random-files-stratified", "seed": seed, "fractions": list(fractions),
              "tiles": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}}
    classes = class_list([(i, n, None) for i, n in enumerate(names)])
    tiles = TileSet(np.stack(xs), y, np.stack(vs), split, record)
    return tiles, stats.result(), spec, classes
