"""Training settings: a dataclass per kind of model (single-date, temporal), filled from
defaults < a YAML/JSON config file < flags.

Every field lands in the bundle's provenance, so a bundle says exactly how it was made; the
config file's own path and checksum are recorded too. Input paths are stored absolute, so
``lulc evaluate`` and ``--resume`` work from any working directory.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lulc.runtime.core.errors import LulcError


class SettingError(LulcError):
    """A setting no run can use, or settings that do not go together.

    ``hint`` names the setting (``--tile``, or a config file's key) so the CLI can report it
    as a bad option (``click.BadParameter``, exit code 2) the way click reports a wrong type;
    ``hint=None`` means a wrong combination of settings (``click.UsageError``). Library callers
    catch it as any :class:`LulcError`.
    """

    def __init__(self, hint: str | None, problem: str):
        super().__init__(f"{hint} {problem}" if hint else problem)
        self.hint, self.problem = hint, problem


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
        _absolute(self, ("labels", "data", "classes", "aoi", "weights"))
        if self.image:
            self.image = [os.path.abspath(p) for p in self.image]

    @property
    def inputs(self) -> list[str | None]:
        """Every file or folder the run reads (the output may be none of them)."""
        return [*self.images, self.labels, self.data, self.classes, self.aoi, self.weights]

    @property
    def images(self) -> list[str]:
        return list(self.image or [])

    def fingerprint(self) -> str:
        """Identity of the run for --resume: everything but how long and where to write."""
        free = {"epochs", "patience", "overwrite", "resume", "output"}
        kept = {k: v for k, v in asdict(self).items() if k not in free}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TemporalConfig:
    """Settings of a temporal model (pixel-lstm, mtlcc, fcn-convlstm) trained on a ``lulc stack``."""

    stack: str | None = None
    labels: str | None = None
    output: str = ""
    arch: str = "mtlcc"
    label_column: str = "class"
    classes: str | None = None
    epochs: int = 10
    tile: int = 24  # MTLCC's tile size
    stride: int | None = None
    split_block: int | None = None
    seed: int = 0
    batch_size: int = 4  # MTLCC's batch size
    learning_rate: float = 1e-3
    patience: int = 5
    infer_tile: int = 64
    infer_overlap: int = 8
    sequence: str = "fixed"  # or "random": a random sorted subset of dates per batch
    sequence_length: int | None = None
    init_from: str | None = None  # a single-date unet bundle for the fcn-convlstm encoder
    mask_unstable_water: str | None = None  # "GREEN,NIR" band names for the NDWI
    water_threshold: float = 0.0
    compare_single_date: bool = False
    overwrite: bool = False
    model_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _absolute(self, ("stack", "labels", "classes", "init_from"))

    @property
    def inputs(self) -> list[str | None]:
        return [self.stack, self.labels, self.classes, self.init_from]


TEMPORAL_ARCHS = ("pixel-lstm", "mtlcc", "fcn-convlstm")
#: temporal model options given as flags or keys, passed to the builder as ``model_options``
MODEL_OPTIONS = ("units", "num_layers", "dropout", "filters", "cell", "depth", "width")
#: flag names that differ from their setting's name
ALIASES = {"lr": "learning_rate", "layers": "num_layers"}
AT_LEAST_ONE = ("epochs", "tile", "stride", "split_block", "batch_size", "depth", "width", "infer_tile",
                "sequence_length")
AT_LEAST_ZERO = ("patience", "infer_overlap")


def _absolute(cfg, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(cfg, name):
            setattr(cfg, name, os.path.abspath(getattr(cfg, name)))


def flag_name(setting: str) -> str:
    """The command-line flag of a setting, for messages."""
    flag = {v: k for k, v in ALIASES.items()}.get(setting, setting)
    return "--" + flag.replace("_", "-")


def check_numbers(cfg: TrainConfig | TemporalConfig) -> None:
    """One clear line for a number no run can use, before any work (``--epochs 0`` would
    otherwise write an untrained bundle, ``--tile 0`` fail deep inside the sampler)."""
    for name in (*AT_LEAST_ONE, *AT_LEAST_ZERO):
        value = getattr(cfg, name, None)
        low = 1 if name in AT_LEAST_ONE else 0
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise LulcError(f"{flag_name(name)} must be a whole number of at least {low}, not {value}")
    checks = {"learning_rate": (lambda v: v > 0, "a number > 0"),
              "brightness": (lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
              "min_labeled": (lambda v: 0 < v <= 1, "a share above 0 and at most 1")}
    for name, (ok, what) in checks.items():
        value = getattr(cfg, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise LulcError(f"{flag_name(name)} must be {what}, not {value}")


PATH_KEYS = ("labels", "output", "data", "classes", "aoi", "weights", "stack", "init_from")


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
    settings = {ALIASES.get(k, k): v for k, v in settings.items()}
    known = {f.name for cls in (TrainConfig, TemporalConfig) for f in fields(cls)} | set(MODEL_OPTIONS)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise LulcError(f"config file {path} has unknown setting(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(known))}")
    # relative paths in the file are relative to the file, not the working directory
    for key in PATH_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = str(path.parent / settings[key])
    if settings.get("image"):
        images = [settings["image"]] if isinstance(settings["image"], str) else settings["image"]
        settings["image"] = [str(path.parent / p) for p in images]
    return settings


def _settings_for(settings: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The config class the arch needs (a stack without --arch means mtlcc), with the
    temporal builders' options moved into ``model_options``; settings of the other kind
    of model are an error rather than silently ignored."""
    temporal = settings.get("arch") in TEMPORAL_ARCHS or ("arch" not in settings and bool(settings.get("stack")))
    cls = TemporalConfig if temporal else TrainConfig
    settings = dict(settings)
    if temporal:
        settings.setdefault("arch", "mtlcc")
        options = {k: settings.pop(k) for k in MODEL_OPTIONS if k in settings}
        settings["model_options"] = {**settings.get("model_options", {}), **options}
    misplaced = sorted(set(settings) - {f.name for f in fields(cls)})
    if misplaced:
        hint = "; temporal models read --stack, not --image" if "image" in misplaced else ""
        raise LulcError(f"{', '.join(map(flag_name, misplaced))} {'does' if len(misplaced) == 1 else 'do'} not apply "
                        f"to --arch {settings.get('arch', 'unet')}{hint}")
    return cls, settings


def build_config(config_file: str | None, flags: dict[str, Any]) -> tuple[TrainConfig | TemporalConfig, dict]:
    """Defaults < file < flags; returns the config and a provenance record of its sources."""
    from_file = read_config_file(config_file) if config_file else {}
    cls, settings = _settings_for({**from_file, **flags})
    cfg = cls(**settings)
    record = {"file": None, "from_file": sorted(set(from_file) - set(flags)), "from_flags": sorted(flags)}
    if config_file:
        record["file"] = str(Path(config_file).resolve())
        record["sha256"] = hashlib.sha256(Path(config_file).read_bytes()).hexdigest()
    return cfg, record
