"""The typed, versioned bundle manifest (``bundle.json``) shared by train, export, runtime and web.

Everything a consumer needs to run a model lives here, so no stage re-guesses bands,
normalisation or classes. ``extra='forbid'`` makes a typo in a hand-edited manifest an error
instead of a silently ignored field.
"""
from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

Task = Literal["segmentation", "scene", "temporal-segmentation", "pixel-series"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: one colour component: a byte
Component = Annotated[int, Field(ge=0, le=255)]


class ClassInfo(_Strict):
    """One class: its id (the map's pixel value), a name for legends and an RGB colour.

    Names end up in XML sidecars, QGIS legends, CSV tables and one-line messages, so a name
    must be printable text (no control characters, which XML 1.0 cannot even hold).
    """

    id: int = Field(ge=0, le=254)
    name: str = Field(min_length=1, max_length=200)
    color: tuple[Component, Component, Component]

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cs") or c in "\ufffe\uffff"]
        if bad:
            raise ValueError(f"class name {name!r} holds the control character {bad[0]!r}; use printable text")
        if not name.strip():
            raise ValueError("class names may not be blank")
        return name


class InputSpec(_Strict):
    """What the model reads from a raster: band names in order, dtype and nodata."""

    bands: list[str] = Field(min_length=1)
    dtype: str
    nodata: float | None = None
    # Spectral indices appended after the raster bands (e.g. "ndvi"); computed by the runtime.
    derived: list[str] = Field(default_factory=list)
    time_steps: int | None = None
    dates: list[str] | None = None

    @property
    def channels(self) -> list[str]:
        """Model input channels: raster bands followed by derived indices."""
        return [*self.bands, *self.derived]


class Normalization(_Strict):
    """Per-channel statistics from the training split (nodata excluded)."""

    method: Literal["zscore"] = "zscore"
    mean: list[float]
    std: list[float]
    p1: list[float] | None = None
    p99: list[float] | None = None

    @model_validator(mode="after")
    def _usable(self) -> Normalization:
        """A zero or NaN std (or a NaN mean) turns every pixel into NaN or inf: refuse it on load,
        not as a silently all-nodata map (training stores std >= 1e-6)."""
        for i, (mean, std) in enumerate(zip(self.mean, self.std)):
            if not math.isfinite(mean):
                raise ValueError(f"mean[{i}] is {mean}; every channel needs a finite mean (retrain the bundle)")
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"std[{i}] is {std}; every channel needs a finite std above 0 (retrain the bundle)")
        return self


class TileSpec(_Strict):
    size: int = Field(gt=0)
    overlap: int = Field(ge=0)
    # Fully convolutional nets with k poolings need H and W divisible by 2**k.
    divisor: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> TileSpec:
        if self.overlap >= self.size:
            raise ValueError(f"tile overlap {self.overlap} must be smaller than tile size {self.size}")
        return self


class Artifact(_Strict):
    path: str
    sha256: str
    format: str
    created: str
    parity: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Strict):
    schema_version: Literal[1] = 1  # SCHEMA_VERSION
    task: Task
    architecture: str
    input: InputSpec
    normalization: Normalization
    tile: TileSpec
    classes: list[ClassInfo] = Field(min_length=2)
    ignore_index: int = 255
    provenance: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        n = len(self.input.channels)
        for name in ("mean", "std", "p1", "p99"):
            values = getattr(self.normalization, name)
            if values is not None and len(values) != n:
                raise ValueError(f"normalization.{name} has {len(values)} values, expected {n} (one per channel)")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} in order, got {ids}")
        if self.ignore_index in ids:
            raise ValueError(f"ignore_index {self.ignore_index} collides with a class id")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def map_classes(self) -> list[ClassInfo]:
        """The classes as written maps code them: the label raster's own values where training
        recorded them (``provenance.label_values``) and they fit a byte map beside its nodata
        255, else the model's ids 0..K-1 (CORINE's 111..523 do not fit)."""
        values = self.provenance.get("label_values")
        if not isinstance(values, list):
            return list(self.classes)
        fits = (isinstance(values, list) and len(values) == len(self.classes) and len(set(values)) == len(values)
                and all(isinstance(v, int) and 0 <= v < 255 for v in values))
        if not fits:
            return list(self.classes)
        return [ClassInfo(id=v, name=c.name, color=c.color) for v, c in zip(values, self.classes)]
