"""Which model ``lulc-infer --scene-stride N`` runs, and how much of each tile it can trust.

A scene bundle's own model gives one class per patch-sized cell. ``lulc export --target onnx
--scene-stride N`` adds ``model.strideN.onnx`` (one class per N px, from the patch window
around each cell); this module finds it and reads the context its windows need. A cell
nearer a tile's edge than that sees the tile's zero padding instead of the raster, so the
tiles overlap by twice the context and the blend gives those cells no weight.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lulc.runtime.core.errors import BundleError, SettingError
from lulc.runtime.core.manifest import Manifest

logger = logging.getLogger(__name__)

#: a context this large (px) is no tile margin but a corrupt or hostile manifest
MAX_CONTEXT_PX = 1 << 14


def stride_artifact(stride: int) -> str:
    """The manifest name of the stride-``stride`` model, as ``lulc export`` records it."""
    return f"onnx-stride{stride}"


@dataclass(frozen=True)
class StrideModel:
    """A scene bundle's stride model: its artefact, px per class cell and the tile margin it needs."""
    artifact: str
    stride: int
    context_px: int  # px from a tile edge within which a cell's window sees the tile's padding


def stride_model(m: Manifest, stride: int | None, root: Path) -> StrideModel | None:
    """The stride model ``--scene-stride stride`` asks for; None for the bundle's own model
    (no stride, or the patch size itself). One line when the bundle cannot do it."""
    if stride is None:
        return None
    if stride < 1:
        raise SettingError("--scene-stride", f"must be a positive number of px, got {stride}")
    if m.task != "scene":
        raise SettingError("--scene-stride", f"is for scene bundles; {root} holds a {m.task} model ({m.architecture})")
    if stride == m.tile.divisor:
        return None
    name = stride_artifact(stride)
    art = m.artifacts.get(name)
    if art is None:
        raise BundleError(f"bundle {root} has no stride-{stride} model ({name}): create it with "
                          f"`lulc export --target onnx --scene-stride {stride} {root}`")
    context = art.details.get("context_px")
    if art.details.get("stride") != stride or not isinstance(context, int) or not 0 <= context <= MAX_CONTEXT_PX:
        raise BundleError(f"{name} in {root} records stride {art.details.get('stride')!r} and context "
                          f"{context!r} px; re-export it with `lulc export --target onnx --scene-stride {stride} {root}`")
    return StrideModel(name, stride, context)


def stride_tiles(model: StrideModel, size: int, overlap: int, divisor: int, tile_given: bool) -> tuple[int, int]:
    """(tile, overlap) defaults for a stride model: tiles overlap by twice the context (each
    side's cells then come from the tile that holds their whole window), and grow to hold
    that overlap unless ``--tile`` was given. The overlap is a whole number of cells, so
    every tile's cells sit on the raster's cell grid."""
    n = model.stride
    overlap = -(-max(overlap, 2 * model.context_px) // n) * n
    if 2 * overlap > size and not tile_given:
        size = -(-2 * overlap // divisor) * divisor
    if 2 * overlap > size:
        overlap = size // 2 // n * n
        logger.warning("--tile %d leaves cells within %d px of a tile edge less than the %d px of context their "
                       "windows need; use --tile %d or more for the model's own classes there", size,
                       model.context_px, model.context_px, 4 * model.context_px)
    return size, overlap
