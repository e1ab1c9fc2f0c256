"""``lulc sample-design MAP -o points.gpkg``: how many reference samples, where, per map class.

Sample size for a target standard error of overall accuracy follows Olofsson et al. (2014),
eq. (13) (Cochran 1977, eq. 5.25, without the finite population correction):
n = (Σ_i W_i S_i / S(Ô))², with S_i = √(U_i (1 − U_i)) from the user's accuracy expected of
each class. Allocation over the map classes is proportional to their area, equal, or — the
paper's recommendation and the default — proportional with a floor per class, so rare
classes get enough samples for their user's accuracy.

The points are a stratified random sample of the map's classified pixels (pixel centres),
drawn in two streamed passes over the map: count each class, choose which of each class's
pixels (by rank in reading order) are taken, then read again and emit them. Memory holds the
sample, never the map; ``--seed`` makes the draw reproducible.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import rasterio

from lulc.runtime.assess.maps import MapClasses, count_pixels, map_classes, open_map, pixel_area_ha, sparse_block
from lulc.runtime.core.errors import SettingError
from lulc.runtime.io.outputs import check_outputs, locked_all
from lulc.runtime.io.vector import write_points

ALLOCATIONS = ("min-per-class", "proportional", "equal")
#: fields of the points written: the interpreter fills ``class``
SCHEMA = {"id": "int", "map_value": "int", "map_class": "str", "class": "str"}


def sample_size(weights: np.ndarray, expected_ua: np.ndarray, target_se: float) -> int:
    """Olofsson et al. (2014) eq. (13): n = (Σ W_i S_i / S(Ô))², S_i = √(U_i (1 − U_i))."""
    s = np.sqrt(expected_ua * (1 - expected_ua))
    return max(1, math.ceil((float(np.sum(weights * s)) / target_se) ** 2))


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Whole numbers proportional to ``shares`` that add up to ``total``."""
    if total <= 0 or shares.sum() <= 0:
        return np.zeros(len(shares), np.int64)
    exact = shares / shares.sum() * total
    out = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return out


def allocate(n: int, pixels: np.ndarray, how: str, min_per_class: int) -> np.ndarray:
    """Samples per class (never more than the class has pixels)."""
    if how not in ALLOCATIONS:
        raise SettingError("--allocation", f"must be one of {', '.join(ALLOCATIONS)}, not {how}")
    present = pixels > 0
    if how == "equal":
        alloc = _largest_remainder(present.astype(np.float64), n)
    elif how == "proportional":
        alloc = _largest_remainder(pixels.astype(np.float64), n)
    else:  # proportional above a floor: floored classes first, the rest shared by area
        floored = np.zeros(len(pixels), bool)
        while True:
            alloc = np.where(floored, min_per_class, 0).astype(np.int64)
            rest = max(0, n - int(alloc.sum()))
            alloc[~floored] = _largest_remainder(np.where(~floored, pixels, 0).astype(np.float64), rest)[~floored]
            low = present & ~floored & (alloc < min_per_class)
            if not low.any():
                break
            floored |= low
    return np.minimum(alloc, pixels)


def expected_accuracies(given: list[str], classes: MapClasses) -> np.ndarray:
    """``--expected-ua``: one value for every class, or NAME=VALUE for some (others 0.8)."""
    default, per_class = 0.8, {}
    for item in given:
        name, _, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise SettingError("--expected-ua", f"{item!r} is not a fraction (0.8, or forest=0.9)") from None
        if not 0 < number < 1:
            raise SettingError("--expected-ua", f"{item!r}: a user's accuracy must lie strictly between 0 and 1")
        if name:
            matches = [n for n in classes.names.values() if n.lower() == name.strip().lower()]
            if not matches:
                raise SettingError("--expected-ua", f"{name!r} is not a class of the map ({', '.join(classes.names.values())})")
            per_class[matches[0]] = number
        else:
            default = number
    return np.array([per_class.get(n, default) for n in classes.names.values()])


@dataclass
class Design:
    """The design: per class its pixels, weight, expected accuracy and samples drawn."""

    classes: list[str]
    values: list[int]
    pixels: np.ndarray
    expected_ua: np.ndarray
    n_target: int
    allocation: np.ndarray
    area_ha: float
    output: str
    seed: int

    def table(self) -> str:
        w = self.pixels / self.pixels.sum()
        width = max(12, *(len(c) for c in self.classes))
        lines = [f"sample size for the target standard error: {self.n_target} (Olofsson et al. 2014, eq. 13); "
                 f"{int(self.allocation.sum())} points drawn (seed {self.seed}) into {self.output}", "",
                 f"{'class':<{width}}  {'mapped ha':>12}  {'weight':>7}  {'exp. UA':>7}  {'samples':>7}"]
        for k, name in enumerate(self.classes):
            lines.append(f"{name:<{width}}  {self.pixels[k] * self.area_ha:>12.1f}  {w[k]:>7.4f}  "
                         f"{self.expected_ua[k]:>7.2f}  {int(self.allocation[k]):>7}")
        return "\n".join(lines)


def draw_points(src: rasterio.io.DatasetReader, classes: MapClasses, allocation: np.ndarray, pixels: np.ndarray,
                seed: int) -> list[dict]:
    """A stratified random sample: ``allocation[k]`` distinct pixels of class k, chosen by rank
    in block reading order, emitted in a second streamed pass."""
    rng = np.random.default_rng(seed)
    ranks = [np.sort(rng.choice(int(n_k), size=int(a), replace=False)) if a else np.zeros(0, np.int64)
             for n_k, a in zip(pixels, allocation)]
    seen = np.zeros(len(ranks), np.int64)
    nxt = np.zeros(len(ranks), np.int64)  # the next rank still to emit, per class
    points: list[dict] = []
    for (row, col), window in src.block_windows(1):
        if all(nxt[k] >= len(r) for k, r in enumerate(ranks)):
            break
        if sparse_block(src, row, col):
            continue
        block = src.read(1, window=window)
        for k, value in enumerate(classes.values):
            if nxt[k] >= len(ranks[k]):
                continue
            where = np.flatnonzero(block == value)
            take = ranks[k][nxt[k]:]
            take = take[take < seen[k] + len(where)] - seen[k]
            seen[k] += len(where)
            if not len(take):
                continue
            nxt[k] += len(take)
            rows, cols = np.divmod(where[take], block.shape[1])
            xs, ys = rasterio.transform.xy(src.window_transform(window), rows, cols)
            points += [{"x": float(x), "y": float(y), "map_value": value, "map_class": classes.names[value], "class": ""}
                       for x, y in zip(np.atleast_1d(xs), np.atleast_1d(ys))]
    points.sort(key=lambda p: (p["map_value"], -p["y"], p["x"]))
    for i, point in enumerate(points, start=1):
        point["id"] = i
    return points


def sample_design(map_path: str | os.PathLike, output: str | os.PathLike, target_se: float = 0.01,
                  expected_ua: list[str] | None = None, allocation: str = "min-per-class", min_per_class: int = 50,
                  n: int | None = None, seed: int = 0, overwrite: bool = False) -> Design:
    """Size, allocate and draw a stratified random reference sample of ``map_path`` into ``output``."""
    if not 0 < target_se < 1:
        raise SettingError("--target-se", f"must lie between 0 and 1, got {target_se}")
    if min_per_class < 0 or (n is not None and n < 1):
        raise SettingError(None, "--min-per-class must be 0 or more and -n at least 1")
    out = check_outputs({"output": output}, [map_path], overwrite=overwrite)["output"]
    with locked_all([out]), open_map(map_path) as src:
        classes = map_classes(src)
        area_ha = pixel_area_ha(src)
        pixels = count_pixels(src)[classes.values]
        if not pixels.sum():
            raise SettingError(None, f"{map_path} has no classified pixel to sample")
        ua = expected_accuracies(expected_ua or [], classes)
        target = n or sample_size(pixels / pixels.sum(), ua, target_se)
        alloc = allocate(target, pixels, allocation, min_per_class)
        points = draw_points(src, classes, alloc, pixels, seed)
        write_points(out, src.crs, points, SCHEMA)
    return Design(list(classes.names.values()), classes.values, pixels, ua, target, alloc, area_ha, str(out), seed)
