"""Training settings: one dataclass, filled from defaults < a YAML/JSON config file < flags.

Every field lands in the bundle's provenance, so a bundle says exactly how it was made; the
config file's own path and checksum are recorded too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lulc.runtime.errors import LulcError


@dataclass
class TrainConfig:
    image: list[str] | str | None = None  # one or more co-registered rasters, stacked in order
    labels: str | None = None
    output: str = ""
    data: str | None = None  # EuroSAT-layout folder instead of image + labels
    arch: str = "unet"
    label_column: str = "class"
    classes: str | None = None
    aoi: str | None = None
    align: bool = False
    indices: list[str] = field(default_factory=list)
    epochs: int = 10
    tile: int = 64  # segmentation tile, or scene patch, in px
    stride: int | None = None
    split_block: int | None = None
    patch_rule: str = "majority"
    min_labeled: float | None = None
    seed: int = 0
    batch_size: int = 16
    learning_rate: float = 1e-3
    depth: int = 3
    width: int = 16
    weights: str | None = None
    freeze_backbone: bool = False
    class_weights: str = "none"
    brightness: float = 0.0
    patience: int = 5
    infer_tile: int = 256
    infer_overlap: int = 32
    overwrite: bool = False
    resume: bool = False
    model_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.image, str):
            self.image = [self.image]
        if isinstance(self.indices, str):
            self.indices = [s.strip().lower() for s in self.indices.split(",") if s.strip()]

    @property
    def images(self) -> list[str]:
        return list(self.image or [])

    def fingerprint(self) -> str:
        """Identity of the run for --resume: everything but how long and where to write."""
        free = {"epochs", "patience", "overwrite", "resume", "output"}
        kept = {k: v for k, v in asdict(self).items() if k not in free}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


FIELDS = {f.name for f in fields(TrainConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML (or JSON) file; keys are flag names with '-' or '_'."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LulcError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LulcError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise LulcError(f"config file {path} must be a mapping of setting: value")
    settings = {str(k).replace("-", "_"): v for k, v in raw.items()}
    settings = {("learning_rate" if k == "lr" else k): v for k, v in settings.items()}
    unknown = sorted(set(settings) - FIELDS)
    if unknown:
        raise LulcError(f"config file {path} has unknown setting(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(FIELDS))}")
    # relative paths in the file are relative to the file, not the working directory
    for key in ("labels", "output", "data", "classes", "aoi", "weights"):
        if isinstance(settings.get(key), str):
            settings[key] = str((path.parent / settings[key]))
    if settings.get("image"):
        images = [settings["image"]] if isinstance(settings["image"], str) else settings["image"]
        settings["image"] = [str(path.parent / p) for p in images]
    return settings


def build_config(config_file: str | None, flags: dict[str, Any]) -> tuple[TrainConfig, dict]:
    """Defaults < file < flags; returns the config and a provenance record of its sources."""
    settings = read_config_file(config_file) if config_file else {}
    settings.update(flags)
    cfg = TrainConfig(**settings)
    record = {"file": None, "from_file": sorted(set(settings) - set(flags)), "from_flags": sorted(flags)}
    if config_file:
        record["file"] = str(Path(config_file).resolve())
        record["sha256"] = hashlib.sha256(Path(config_file).read_bytes()).hexdigest()
    return cfg, record
