"""Training samples cut from a raster stack and a label raster, with a spatially blocked split.

The raster is cut into square split blocks; whole blocks go to train, validation or test
and samples never cross a block edge, so overlapping tiles cannot leak between splits (a
random per-tile split would put near-copies of test pixels in the training set). Blocks are
read one at a time and the normalisation statistics of the training blocks are accumulated
as they stream past, so the whole raster is never in memory.

Two kinds of sample: segmentation tiles (a label per pixel) and scene patches (EuroSAT
style: one label per patch, by majority or by the centre pixel). A patch's label is stored
as a constant label map so that both train through the same masked pixel loss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from lulc.runtime.core.errors import LulcError
from lulc.runtime.core.manifest import Normalization

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: with fewer test blocks than this, the test metrics describe a few neighbourhoods, not the map
MIN_TEST_BLOCKS = 5
#: pixels kept per block for the percentile estimate (mean and std are exact)
PERCENTILE_SAMPLE = 4096


@dataclass
class TileSet:
    x: np.ndarray  # (N, T, T, C) float32, raw band values
    y: np.ndarray  # (N, T, T) uint8 class ids, ignore value where unlabeled or nodata
    valid: np.ndarray  # (N, T, T) bool, False where any band is nodata
    split: np.ndarray  # (N,) index into SPLITS
    split_record: dict = field(default_factory=dict)
    origins: np.ndarray | None = None  # (N, 2) row, col of each tile in the raster, if it has one

    def part(self, name: str) -> TileSet:
        keep = self.split == SPLITS.index(name)
        origins = None if self.origins is None else self.origins[keep]
        return TileSet(self.x[keep], self.y[keep], self.valid[keep], self.split[keep], self.split_record, origins)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class SampleSpec:
    """How samples are cut: ``task`` segmentation (tiles) or scene (one label per patch)."""

    tile: int
    stride: int
    split_block: int
    seed: int = 0
    task: str = "segmentation"
    rule: str = "majority"  # scene patches: "majority" or "centre"
    min_labeled: float = 0.05
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    ignore: int = 255


class StatsAccumulator:
    """Streamed per-channel mean/std (exact, float64 sums) and 1st/99th percentiles.

    Percentiles come from a seeded subsample of each block, which bounds memory by the
    number of blocks rather than the number of pixels; they only set display stretches.
    """

    def __init__(self, channels: int, seed: int = 0):
        self.n = 0
        self.sum = np.zeros(channels)
        self.sumsq = np.zeros(channels)
        self.samples: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, raw: np.ndarray, valid: np.ndarray) -> None:
        pixels = raw[:, valid].astype(np.float64)  # (C, P)
        if not pixels.size:
            return
        self.n += pixels.shape[1]
        self.sum += pixels.sum(axis=1)
        self.sumsq += (pixels**2).sum(axis=1)
        keep = self.rng.choice(pixels.shape[1], min(PERCENTILE_SAMPLE, pixels.shape[1]), replace=False)
        self.samples.append(pixels[:, keep])

    def result(self) -> Normalization:
        if self.n == 0:
            raise LulcError("the training split has no valid pixel (all nodata); check the image's nodata value")
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sumsq / self.n - mean**2, 0.0))
        p1, p99 = np.percentile(np.concatenate(self.samples, axis=1), [1, 99], axis=1)
        return Normalization(mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist(), p1=p1.tolist(), p99=p99.tolist())


def assign_blocks(n_blocks: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split index per block: a seeded shuffle cut at the train/val/test fractions."""
    order = np.random.default_rng(seed).permutation(n_blocks)
    n_val = max(1, round(fractions[1] * n_blocks))
    n_test = max(1, round(fractions[2] * n_blocks))
    if n_blocks - n_val - n_test < 1:
        raise LulcError(f"only {n_blocks} split blocks: too few for train/val/test; use a smaller --split-block or a larger image")
    split = np.zeros(n_blocks, dtype=np.int64)
    split[order[:n_val]] = 1
    split[order[n_val : n_val + n_test]] = 2
    return split


def patch_label(lbl: np.ndarray, spec: SampleSpec) -> int | None:
    """One label for a scene patch, or None when the patch is not labelled well enough."""
    if spec.rule == "centre":
        c = lbl[lbl.shape[0] // 2, lbl.shape[1] // 2]
        return None if c == spec.ignore else int(c)
    counts = np.bincount(lbl[lbl != spec.ignore], minlength=1)
    best = int(counts.argmax())
    return best if counts[best] >= spec.min_labeled * lbl.size else None


def _samples_in_block(raw, lbl, valid, spec: SampleSpec):
    tile = spec.tile
    if tile == 1 and spec.task != "scene":
        # per-pixel series (points, the generate_series step): only labelled pixels, no scan
        for oy, ox in zip(*np.nonzero(lbl != spec.ignore)):
            yield (oy, ox), raw[:, oy : oy + 1, ox : ox + 1].transpose(1, 2, 0), lbl[oy : oy + 1, ox : ox + 1], \
                valid[oy : oy + 1, ox : ox + 1]
        return
    for oy in range(0, spec.split_block - tile + 1, spec.stride):
        for ox in range(0, spec.split_block - tile + 1, spec.stride):
            t_lbl = lbl[oy : oy + tile, ox : ox + tile]
            if spec.task == "scene":
                label = patch_label(t_lbl, spec)
                if label is None:
                    continue
                t_lbl = np.full_like(t_lbl, label)
            elif (t_lbl != spec.ignore).mean() < spec.min_labeled:
                continue
            yield (oy, ox), raw[:, oy : oy + tile, ox : ox + tile].transpose(1, 2, 0), t_lbl, valid[oy : oy + tile, ox : ox + tile]


def extract_tiles(stack, labels, spec: SampleSpec, statistics: bool = True) -> tuple[TileSet, Normalization | None]:
    """Cut labelled samples inside spatial blocks (read one at a time) and stream the stats.

    ``stack`` is a :class:`~lulc.training.sources.RasterStack`, ``labels`` an open dataset on
    its grid. Returns the samples (raw values) and the training split's per-channel
    statistics, or None without ``statistics`` (time series pool theirs over dates).
    """
    tile, split_block = spec.tile, spec.split_block
    rows, cols = stack.height // split_block, stack.width // split_block
    if rows * cols == 0:
        raise LulcError(f"image {stack.width} x {stack.height} px is smaller than one split block ({split_block} px)")
    block_split = assign_blocks(rows * cols, spec.fractions, spec.seed)
    stats = StatsAccumulator(len(stack.channels), spec.seed)
    xs, ys, vs, ss, origins = [], [], [], [], []
    seen = {"valid": 0, "nan": 0, "all": 0}  # pixels, to say why nothing could be sampled
    for b in range(rows * cols):
        window = Window((b % cols) * split_block, (b // cols) * split_block, split_block, split_block)
        raw, valid = stack.read(window)
        seen["valid"] += int(valid.sum())
        seen["nan"] += int(np.isnan(raw).all(axis=0).sum())
        seen["all"] += valid.size
        if statistics and block_split[b] == 0:
            stats.add(raw, valid)
        lbl = np.where(valid, labels.read(1, window=window), spec.ignore).astype(np.uint8)
        for (oy, ox), x, y, v in _samples_in_block(raw, lbl, valid, spec):
            origins.append((window.row_off + oy, window.col_off + ox))
            xs.append(x)
            ys.append(y)
            vs.append(v)
            ss.append(block_split[b])
    if not seen["valid"]:
        raise LulcError(_no_valid_pixel(stack, seen["nan"] == seen["all"]))
    if not xs:
        what = "patch has a label" if spec.task == "scene" else f"tile has at least {spec.min_labeled:.0%} labelled pixels"
        raise LulcError(f"no {tile} px {what}; check that the labels overlap the image, or use a smaller --tile")
    split = np.array(ss)
    for i, name in enumerate(SPLITS):
        if not (split == i).any():
            raise LulcError(f"too few samples: the {name} split got no labelled {spec.task} sample; "
                            "use a smaller --split-block or --tile, or more labels")
    record = {
        "method": "spatial-blocks", "block_px": split_block, "seed": spec.seed, "fractions": list(spec.fractions),
        "blocks": {name: np.flatnonzero(block_split == i).tolist() for i, name in enumerate(SPLITS)},
        "block_grid": [rows, cols], "tiles": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)},
    }
    tiles = TileSet(np.stack(xs), np.stack(ys), np.stack(vs), split, record, np.asarray(origins))
    return tiles, stats.result() if statistics else None


def _no_valid_pixel(stack, all_nan: bool) -> str:
    """Why an image gave no valid pixel: NaN everywhere, or its nodata value everywhere."""
    names = ", ".join(str(p) for p in getattr(stack, "paths", [])) or "the image"
    if all_nan:
        return f"every pixel of {names} is NaN: there is no value to train on (a failed export or an empty mosaic?)"
    return f"every pixel of {names} is nodata or NaN; check the image's nodata value"


def block_count(tiles: TileSet) -> int | None:
    """Spatial split blocks the samples come from (None for samples without a raster position)."""
    if tiles.origins is None or not len(tiles) or "block_px" not in tiles.split_record:
        return None
    return len(np.unique(tiles.origins // tiles.split_record["block_px"], axis=0))


def count_test_blocks(test: TileSet) -> int | None:
    """Blocks behind the test metrics; warns when they are too few to trust (a 489 x 443 px
    raster with the default block of 2 x tile leaves one test block of nine)."""
    n = block_count(test)
    if n is not None and n < MIN_TEST_BLOCKS:
        logger.warning("these metrics come from %d spatial block(s) only (%d px each): treat them as anecdotal, "
                       "or use a smaller --split-block (at least the tile size) for more test blocks",
                       n, test.split_record["block_px"])
    return n


def normalize(x: np.ndarray, valid: np.ndarray, norm: Normalization) -> np.ndarray:
    """Z-score as the runtime's pack kernel does: invalid pixels become 0."""
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    out = (x - mean) / std
    out[~valid] = 0.0
    return out.astype(np.float32)
