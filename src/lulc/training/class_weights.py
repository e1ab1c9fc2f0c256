"""Per-class loss weights (``--class-weights balanced|none|FILE``).

``balanced`` is inverse pixel frequency on the training split (as in the change-detection
paper), normalised so an evenly spread label set gets weight 1 everywhere; classes absent
from the training split get 0, since nothing could be learnt from them anyway.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lulc.runtime.core.errors import LulcError, SettingError
from lulc.training.data import TileSet
from lulc.training.labels import IGNORE


def balanced(tiles: TileSet, num_classes: int) -> np.ndarray:
    counts = np.bincount(tiles.y[(tiles.y != IGNORE) & tiles.valid], minlength=num_classes)[:num_classes]
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def from_file(path: str, names: list[str]) -> np.ndarray:
    """A JSON list (one weight per class, in order) or mapping {class name: weight} (default 1)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LulcError(f"cannot read --class-weights {path}: {exc}") from None
    if isinstance(raw, list):
        if len(raw) != len(names):
            raise LulcError(f"--class-weights {path} lists {len(raw)} weights for {len(names)} classes")
        return np.asarray(raw, dtype=np.float64)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise LulcError(f"--class-weights {path} names unknown classes {', '.join(unknown)} (classes: {', '.join(names)})")
    return np.asarray([float(raw.get(n, 1.0)) for n in names])


def resolve_class_weights(spec: str, train: TileSet, names: list[str]) -> np.ndarray | None:
    """Weights per class id, or None for unweighted."""
    if spec == "none":
        return None
    if spec == "balanced":
        return balanced(train, len(names))
    if not Path(spec).is_file():
        raise SettingError("--class-weights", f"must be balanced, none or a JSON file; {spec} is none of these")
    return from_file(spec, names)
