"""The typed, versioned bundle manifest (``bundle.json``) shared by train, export, runtime and web.

Everything a consumer needs to run a model lives here, so no stage re-guesses bands,
normalisation or classes. ``extra='forbid'`` makes a typo in a hand-edited manifest an error
instead of a silently ignored field. The two open records — an artefact's ``details`` and the
bundle's ``provenance`` — type every field the runtime reads (a wrong type is an error on
load) and keep the rest of what export and training recorded as it is. Older versions are
upgraded on load (:mod:`lulc.runtime.core.upgrade`).
"""
from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2

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
    """How the runtime tiles a raster for this model: tile and overlap in px, and the multiple
    a tile size must be (2**k for k poolings)."""

    size: int = Field(gt=0)
    overlap: int = Field(ge=0)
    # Fully convolutional nets with k poolings need H and W divisible by 2**k.
    divisor: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> TileSpec:
        if self.overlap >= self.size:
            raise ValueError(f"tile overlap {self.overlap} must be smaller than tile size {self.size}")
        return self


class _Record(BaseModel):
    """The typed fields of an open record (artefact details, provenance): validated strictly,
    while the fields the runtime does not read pass as they were recorded."""

    model_config = ConfigDict(extra="allow")


def _checked(record: type[_Record], value: Any) -> dict[str, Any]:
    """``value`` as the plain dict it is in ``bundle.json``, once ``record`` accepted its types."""
    checked = record.model_validate(value if value is not None else {})
    typed = {k: v for k, v in checked.model_dump(include=set(type(checked).model_fields)).items() if v is not None}
    return {**(checked.model_extra or {}), **typed}


#: whole numbers as JSON numbers: "8" or 8.0 in a hand-edited manifest is an error, not a guess
PositiveInt = Annotated[int, Field(ge=1, strict=True)]


class ArtifactDetails(_Record):
    """What an artefact's export recorded; typed where the runtime depends on it."""

    precision: Literal["fp32", "fp16", "int8"] | None = None  # what the artefact computes in
    max_batch: PositiveInt | None = None  # TensorRT engines: the profile's largest batch
    input_shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None = None  # TensorRT: [H, W, C]
    stride: PositiveInt | None = None  # scene stride models: px per class cell
    context_px: Annotated[int, Field(ge=0, le=1 << 14, strict=True)] | None = None  # stride models: tile margin


class Provenance(_Record):
    """How the bundle was made (training config, data, history, metrics...); typed where the
    runtime depends on it."""

    label_values: list[Annotated[int, Field(ge=0, strict=True)]] | None = None  # the label raster's code of each class


class Artifact(_Strict):
    """One file (or folder) of the bundle, its checksum, and what its export measured."""

    path: str
    sha256: str
    format: str
    created: str
    parity: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)  # checked as ArtifactDetails

    @field_validator("details", mode="before")
    @classmethod
    def _typed_details(cls, value: Any) -> dict[str, Any]:
        return _checked(ArtifactDetails, value)


class Manifest(_Strict):
    """``bundle.json``: everything a consumer needs to run the model, and its artefacts."""

    schema_version: Literal[2] = 2  # SCHEMA_VERSION
    task: Task
    architecture: str
    input: InputSpec
    normalization: Normalization
    tile: TileSpec
    classes: list[ClassInfo] = Field(min_length=2)
    ignore_index: int = 255
    provenance: dict[str, Any] = Field(default_factory=dict)  # checked as Provenance

    @field_validator("provenance", mode="before")
    @classmethod
    def _typed_provenance(cls, value: Any) -> dict[str, Any]:
        return _checked(Provenance, value)
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
        if values is None:
            return list(self.classes)
        fits = len(values) == len(self.classes) and len(set(values)) == len(values) and all(v < 255 for v in values)
        if not fits:
            return list(self.classes)
        return [ClassInfo(id=v, name=c.name, color=c.color) for v, c in zip(values, self.classes)]
