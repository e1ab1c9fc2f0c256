"""Model bundles: a folder with ``bundle.json`` plus artefacts, read and written atomically.

Loading a bundle never executes code from it: the manifest is JSON validated by a schema,
arrays are read with ``allow_pickle=False`` and Keras models are loaded in safe mode. A
bundle is data, not a pointer: every artefact path resolves strictly inside the bundle
folder (no absolute paths, no ``..``, no symlink leading out), so a hand-edited or hostile
``bundle.json`` cannot make lulc read or overwrite files elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from lulc.runtime.core.errors import BundleError
from lulc.runtime.core.manifest import Artifact, Manifest
from lulc.runtime.core.upgrade import upgrade

MANIFEST = "bundle.json"
SAMPLES = "samples.npz"


def sha256sum(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (artefacts can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    """The time now, UTC, to the second: when an artefact was recorded."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class Bundle:
    """A model bundle on disk; ``manifest`` is the validated ``bundle.json``."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def load(cls, root: str | os.PathLike) -> Bundle:
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise BundleError(f"bundle folder not found: {root}")
        if not path.is_file():
            raise BundleError(f"{root} is not a model bundle: it has no {MANIFEST} (create one with `lulc train`)")
        try:
            raw = json.loads(path.read_text())
        except RecursionError:  # e.g. 100 000 nested lists: Python's parser gives up on the depth
            raise BundleError(f"cannot read {path}: it is nested too deeply to be a bundle manifest") from None
        except (OSError, ValueError) as exc:  # ValueError: invalid JSON or invalid UTF-8
            raise BundleError(f"cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise BundleError(f"{path} holds a JSON {type(raw).__name__}, not an object; it is not a bundle manifest")
        try:
            manifest = Manifest.model_validate(upgrade(raw, path))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            hint = f" (re-export it: `lulc export {root}`)" if where.startswith("artifacts.") else ""
            raise BundleError(f"{path} is invalid at {where}: {first['msg']}{hint}") from None
        return cls(root, manifest)

    def save(self) -> None:
        """Write ``bundle.json`` atomically so a crash never leaves a half-written manifest."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(self.manifest.model_dump_json(indent=2))
        os.replace(tmp, self.root / MANIFEST)

    def has(self, name: str) -> bool:
        return name in self.manifest.artifacts

    def artifact_path(self, name: str, verify: bool = True) -> Path:
        """Path of a recorded artefact; a missing or altered file is a clear error."""
        art = self.manifest.artifacts.get(name)
        if art is None:
            hint = {"onnx": "lulc export --target onnx", "tfjs": "lulc export --target tfjs",
                    "trt": "lulc export --target trt"}.get(name, "lulc export")
            raise BundleError(f"bundle {self.root} has no '{name}' artefact (create it with `{hint} {self.root}`)")
        path = self.inside(art.path, name)
        if not path.exists():
            raise BundleError(f"bundle {self.root} lists '{name}' but {path} is missing")
        if verify and path.is_file() and sha256sum(path) != art.sha256:
            raise BundleError(f"{path} does not match its checksum in {MANIFEST}: the bundle was modified or corrupted")
        return path

    def inside(self, relative: str, what: str = "artefact") -> Path:
        """``relative`` under the bundle folder, refused unless it stays inside it once resolved.

        Absolute paths and ``..`` are refused as written; symlinks are followed and refused when
        they lead out of the folder (a link between the bundle's own files is fine).
        """
        rel = Path(relative)
        if rel.is_absolute() or rel.drive or ".." in rel.parts or not rel.parts:
            raise BundleError(f"{MANIFEST} in {self.root} names {what} path {relative!r}, which is not inside "
                              "the bundle folder; artefacts must be plain relative paths (re-export the bundle)")
        path = self.root / rel
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise BundleError(f"{what} {path} in bundle {self.root} is a link leading outside the bundle folder; "
                              "replace it with the file itself")
        return path

    def add_artifact(
        self,
        name: str,
        source: Path,
        fmt: str,
        parity: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        dest: str | None = None,
    ) -> Artifact:
        """Move ``source`` into the bundle (atomic rename) and record it in the manifest.

        For a folder artefact (TF.js), the checksum covers its ``model.json``.
        """
        dest_rel = dest or Path(source).name
        target = self.inside(dest_rel, name)
        if Path(source).resolve() != target.resolve():
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(source, target)
        checksum_file = target / "model.json" if target.is_dir() else target
        art = Artifact(
            path=dest_rel,
            sha256=sha256sum(checksum_file),
            format=fmt,
            created=now_iso(),
            parity=parity,
            details=details or {},
        )
        self.manifest.artifacts[name] = art
        self.save()
        return art

    def fingerprint(self) -> str:
        """Identity of the trained model (its Keras artefact checksum), stable across exports."""
        art = self.manifest.artifacts.get("keras")
        return art.sha256 if art else self.manifest.model_dump_json()

    def load_samples(self) -> np.ndarray:
        """Normalised sample tiles (N, H, W, C) stored at training time, for parity checks."""
        path = self.artifact_path("samples")
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["x"].astype(np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # ValueError covers pickled (object) arrays, which are never unpickled
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BundleError(f"cannot read the sample tiles {path}: {reason} (retrain to rewrite them)") from None
