"""Older ``bundle.json`` versions brought up to date on load, one step at a time.

A bundle is read for years after it was trained. Each schema change adds one function here
that turns version N into N + 1 (Raster Vision's upgrader chain); :func:`upgrade` runs the
steps from the file's version to :data:`~lulc.runtime.core.manifest.SCHEMA_VERSION`, and the
bundle is written back at the current version the next time it is saved (e.g. by an export).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lulc.runtime.core.errors import BundleError
from lulc.runtime.core.manifest import SCHEMA_VERSION

Raw = dict[str, Any]

#: what each ONNX artefact computes in, as version 1 implied by its name
_ONNX_PRECISION = {"onnx": "fp32", "onnx-fp16": "fp16", "onnx-int8": "int8"}


def _v1_to_v2(raw: Raw) -> Raw:
    """Version 2 records every ONNX artefact's precision in its details (version 1 left it to
    the artefact's name), so the runtime reads precision from the manifest alone."""
    for name, art in (raw.get("artifacts") or {}).items():
        details = art.get("details") if isinstance(art, dict) else None
        if name in _ONNX_PRECISION and isinstance(details, dict):
            details.setdefault("precision", _ONNX_PRECISION[name])
        elif name in _ONNX_PRECISION and isinstance(art, dict) and details is None:
            art["details"] = {"precision": _ONNX_PRECISION[name]}
    raw["schema_version"] = 2
    return raw


#: version N -> N + 1
UPGRADERS: dict[int, Callable[[Raw], Raw]] = {1: _v1_to_v2}


def upgrade(raw: Raw, path: Path) -> Raw:
    """``raw`` (a parsed ``bundle.json``) at the current schema version; a version this lulc
    does not know is one line."""
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise BundleError(f"{path} has schema version {version!r}; this lulc reads versions 1 to {SCHEMA_VERSION} "
                          "(retrain, or upgrade lulc for a newer bundle)")
    raw = copy.deepcopy(raw)
    while version < SCHEMA_VERSION:
        raw = UPGRADERS[version](raw)
        version += 1
    return raw
