"""Spectral indices appended to the raster bands (``--indices ndvi,ndwi,ndbi``).

Training and the runtime call the same function, so a model never sees an index computed
one way in training and another way in production. Indices are normalised differences of
two named bands; the manifest's ``input.bands`` names them, so the band *order* of a raster
does not matter, only its names.
"""
from __future__ import annotations

import numpy as np

from lulc.runtime.core.errors import InputRasterError

#: index name -> (a, b) for (a - b) / (a + b), with accepted band-name aliases for each
INDICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ndvi": (("B08", "nir"), ("B04", "red")),
    "ndwi": (("B03", "green"), ("B08", "nir")),  # McFeeters: water positive
    "ndbi": (("B11", "swir1", "swir"), ("B08", "nir")),
}


def _find(bands: list[str], aliases: tuple[str, ...]) -> int | None:
    lowered = [b.lower() for b in bands]
    for alias in aliases:
        if alias.lower() in lowered:
            return lowered.index(alias.lower())
    return None


def index_bands(bands: list[str], derived: list[str]) -> list[tuple[int, int]]:
    """Band positions (a, b) of each requested index; a clear error names what is missing."""
    pairs = []
    for name in derived:
        if name not in INDICES:
            raise InputRasterError(f"unknown index '{name}'; choose from {', '.join(INDICES)}")
        found = [_find(bands, aliases) for aliases in INDICES[name]]
        missing = [aliases[0] for aliases, i in zip(INDICES[name], found) if i is None]
        if missing:
            raise InputRasterError(
                f"index '{name}' needs band(s) {', '.join(missing)} but the raster bands are {', '.join(bands)}; "
                "name the bands (GeoTIFF band descriptions) or drop the index"
            )
        a, b = found
        assert a is not None and b is not None  # checked just above
        pairs.append((a, b))
    return pairs


def append_indices(raw: np.ndarray, bands: list[str], derived: list[str]) -> np.ndarray:
    """(C, H, W) raw bands -> (C + len(derived), H, W) float32 with the indices appended."""
    if not derived:
        return raw
    out = np.empty((raw.shape[0] + len(derived), *raw.shape[1:]), dtype=np.float32)
    out[: raw.shape[0]] = raw
    fill_indices(out, raw.shape[0], index_bands(bands, derived))
    return out


def fill_indices(block: np.ndarray, n_bands: int, pairs: list[tuple[int, int]]) -> None:
    """Write the indices of ``pairs`` into ``block[n_bands:]`` in place (the runtime's reused buffers).

    A zero denominator gives 0 (not NaN), so an all-dark pixel does not look like nodata;
    NaN inputs (outside the raster) stay NaN. Validity comes from the raster bands only.
    """
    for k, (a, b) in enumerate(pairs):
        num = block[a] - block[b]
        den = block[a] + block[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            block[n_bands + k] = np.where(den != 0, num / np.where(den != 0, den, 1), 0.0)
