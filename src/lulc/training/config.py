"""Training settings: one validated model per kind of run (single-date, temporal) on a shared
base, filled from defaults < a YAML/JSON config file < flags.

The configs are pydantic dataclasses, strict and closed (``extra="forbid"``): ``epochs: "ten"``
or ``epochs: "10"`` in a config file, a misspelt key, ``--tile 0`` or ``--lr 0`` stop with one
line naming the setting before any work, instead of failing deep inside a run or training
with a value the user did not mean. Dataclasses (not ``BaseModel``) because exporters and
``lulc evaluate`` rebuild a run's config from the bundle with :func:`dataclasses.fields`.

Every field lands in the bundle's provenance, so a bundle says exactly how it was made; the
config file's own path and checksum are recorded too. Input paths are stored absolute, so
``lulc evaluate`` and ``--resume`` work from any working directory.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from lulc.runtime.core.errors import LulcError, SettingError


def _absolute(value: Any) -> Any:
    return os.path.abspath(os.fspath(value)) if isinstance(value, (str, os.PathLike)) and value else value


def _absolute_list(value: Any) -> Any:
    """One path or several (``--image`` repeated, or a YAML list) -> absolute paths."""
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [_absolute(p) for p in value] if isinstance(value, list) else value


def _names(value: Any) -> Any:
    """``--indices ndvi,NDWI`` -> ["ndvi", "ndwi"]; a YAML list is taken as it is."""
    return [s.strip().lower() for s in value.split(",") if s.strip()] if isinstance(value, str) else value


InputPath = Annotated[str | None, BeforeValidator(_absolute)]
OutputPath = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]
Count = Annotated[int, Field(ge=1)]
CountOrZero = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
CLOSED = ConfigDict(extra="forbid", strict=True)
C = TypeVar("C", bound="RunConfig")


@dataclass(config=CLOSED)
class RunConfig:
    """Settings every training run has; each kind of run adds its own and its defaults."""

    labels: InputPath = None
    output: OutputPath = ""
    arch: str = "unet"
    label_column: str = "class"
    classes: InputPath = None
    epochs: Count = 10
    tile: Count = 64  # segmentation tile, or scene patch, in px
    stride: Count | None = None
    split_block: Count | None = None
    seed: int = 0
    batch_size: Count = 16
    learning_rate: Positive = 1e-3
    patience: CountOrZero = 5
    infer_tile: Count = 256
    infer_overlap: CountOrZero = 32
    overwrite: bool = False
    model_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("split_block")
    @classmethod
    def _whole_tiles(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A split block holds whole tiles: samples never cross a block edge."""
        tile = info.data.get("tile")
        if value is not None and tile is not None and value < tile:
            raise ValueError(f"must be at least the tile size {tile}")
        return value

    def fingerprint(self) -> str:
        """Identity of the run for --resume: everything but how long and where to write."""
        free = {"epochs", "patience", "overwrite", "resume", "output"}
        kept = {k: v for k, v in asdict(self).items() if k not in free}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_record(cls: type[C], recorded: dict[str, Any]) -> C:
        """The config a bundle's provenance recorded; keys this version does not know are dropped."""
        names = {f.name for f in fields(cls)}
        return validated(cls, {k: v for k, v in recorded.items() if k in names},
                         lambda key: f"{key} (recorded in the bundle)")


@dataclass(config=CLOSED)
class TrainConfig(RunConfig):
    """Settings of a single-date model (unet, fcn, scene-*) trained on rasters or a EuroSAT folder."""

    image: Annotated[list[str] | None, BeforeValidator(_absolute_list)] = None  # co-registered, stacked in order
    data: InputPath = None  # EuroSAT-layout folder instead of image + labels
    aoi: InputPath = None
    align: bool = False
    indices: Annotated[list[str], BeforeValidator(_names)] = Field(default_factory=list)
    patch_rule: Literal["majority", "centre"] = "majority"
    min_labeled: Annotated[float, Field(gt=0, le=1)] | None = None
    depth: Count = 3
    width: Count = 16
    weights: InputPath = None
    freeze_backbone: bool = False
    class_weights: str = "none"
    brightness: Annotated[float, Field(ge=0, lt=1)] = 0.0
    resume: bool = False

    @property
    def inputs(self) -> list[str | None]:
        """Every file or folder the run reads (the output may be none of them)."""
        return [*self.images, self.labels, self.data, self.classes, self.aoi, self.weights]

    @property
    def images(self) -> list[str]:
        return list(self.image or [])


@dataclass(config=CLOSED)
class TemporalConfig(RunConfig):
    """Settings of a temporal model (pixel-lstm, mtlcc, fcn-convlstm) trained on a ``lulc stack``."""

    stack: InputPath = None
    arch: str = "mtlcc"
    tile: Count = 24  # MTLCC's tile size
    batch_size: Count = 4  # MTLCC's batch size
    infer_tile: Count = 64
    infer_overlap: CountOrZero = 8
    sequence: Literal["fixed", "random"] = "fixed"  # random: a random sorted subset of dates per batch
    sequence_length: Count | None = None
    init_from: InputPath = None  # a single-date unet bundle for the fcn-convlstm encoder
    mask_unstable_water: str | None = None  # "GREEN,NIR" band names for the NDWI
    water_threshold: float = 0.0
    compare_single_date: bool = False

    @property
    def inputs(self) -> list[str | None]:
        """Every file or folder the run reads (the output may be none of them)."""
        return [self.stack, self.labels, self.classes, self.init_from]


TEMPORAL_ARCHS = ("pixel-lstm", "mtlcc", "fcn-convlstm")
#: temporal model options given as flags or keys, passed to the builder as ``model_options``
MODEL_OPTIONS = ("units", "num_layers", "dropout", "filters", "cell", "depth", "width")
#: flag names that differ from their setting's name
ALIASES = {"lr": "learning_rate", "layers": "num_layers"}
PATH_KEYS = ("labels", "output", "data", "classes", "aoi", "weights", "stack", "init_from")


def flag_name(setting: str) -> str:
    """The command-line flag of a setting, for messages."""
    flag = {v: k for k, v in ALIASES.items()}.get(setting, setting)
    return "--" + flag.replace("_", "-")


def validated(cls: type[C], settings: dict[str, Any], where: Callable[[str], str] = flag_name) -> C:
    """``cls(**settings)``, its first validation error as one :class:`SettingError` line.

    ``where`` names a setting for the message: its flag, or its key in a config file.
    """
    try:
        return cls(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "settings"
        if error["type"] == "unexpected_keyword_argument":
            valid = sorted({f.name for f in fields(cls)} | (set(MODEL_OPTIONS) if cls is TemporalConfig else set()))
            raise SettingError(where(key), f"is not a setting (valid: {', '.join(valid)})") from None
        problem = error["msg"].removeprefix("Value error, ").replace("Input should", "should", 1)
        raise SettingError(where(key), f"{problem}, not {error['input']!r}") from None


def require_multiple(cfg: RunConfig, name: str, divisor: int, model: str) -> None:
    """``--tile`` and ``--infer-tile`` hold whole model strides; known once the model is built."""
    value = getattr(cfg, name)
    if value % divisor:
        raise SettingError(flag_name(name), f"{value} must be a multiple of {divisor} for {model}")


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
    # relative paths in the file are relative to the file, not the working directory
    for key in PATH_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = str(path.parent / settings[key])
    if settings.get("image"):
        images = [settings["image"]] if isinstance(settings["image"], str) else settings["image"]
        settings["image"] = [str(path.parent / p) if isinstance(p, str) else p for p in images]
    return settings


def _settings_for(settings: dict[str, Any]) -> tuple[type[TrainConfig] | type[TemporalConfig], dict[str, Any]]:
    """The config class the arch needs (a stack without --arch means mtlcc), with the
    temporal builders' options moved into ``model_options``; settings of the other kind
    of model are an error rather than silently ignored (unknown ones are the config's)."""
    temporal = settings.get("arch") in TEMPORAL_ARCHS or ("arch" not in settings and bool(settings.get("stack")))
    cls, other = (TemporalConfig, TrainConfig) if temporal else (TrainConfig, TemporalConfig)
    settings = dict(settings)
    if temporal:
        settings.setdefault("arch", "mtlcc")
        options = {k: settings.pop(k) for k in MODEL_OPTIONS if k in settings}
        settings["model_options"] = {**settings.get("model_options", {}), **options}
    own, theirs = {f.name for f in fields(cls)}, {f.name for f in fields(other)} | set(MODEL_OPTIONS)
    misplaced = sorted(k for k in settings if k not in own and k in theirs)
    if misplaced:
        hint = "; temporal models read --stack, not --image" if "image" in misplaced else ""
        raise SettingError(None, f"{', '.join(map(flag_name, misplaced))} {'does' if len(misplaced) == 1 else 'do'} "
                                 f"not apply to --arch {settings.get('arch', 'unet')}{hint}")
    return cls, settings


def build_config(config_file: str | None, flags: dict[str, Any]) -> tuple[TrainConfig | TemporalConfig, dict]:
    """Defaults < file < flags; returns the config and a provenance record of its sources."""
    from_file = read_config_file(config_file) if config_file else {}
    cls, settings = _settings_for({**from_file, **flags})
    in_file = set(from_file) - set(flags)
    cfg = validated(cls, settings, lambda key: f"{key} in {config_file}" if key in in_file else flag_name(key))
    record: dict[str, Any] = {"file": None, "from_file": sorted(in_file), "from_flags": sorted(flags)}
    if config_file:
        record["file"] = str(Path(config_file).resolve())
        record["sha256"] = hashlib.sha256(Path(config_file).read_bytes()).hexdigest()
    return cfg, record
