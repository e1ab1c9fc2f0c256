"""Where a training run may write its bundle, and how the bundle gets there.

The rules (README, "Safety"): the bundle folder must not be, resolve to, contain or lie
inside an input; an existing non-empty folder is replaced only with ``--overwrite`` and
only if it is a lulc bundle (a valid ``bundle.json``), never the current folder or one
above it. The bundle is assembled in ``.NAME.partial`` beside the output and renamed into
place when complete; a failed run removes that staging folder unless it holds a
checkpoint that ``--resume`` can continue.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BundleError, OutputError

logger = logging.getLogger(__name__)


def staging_path(output: Path) -> Path:
    """The hidden folder beside ``output`` in which the bundle is assembled."""
    return output.with_name(f".{output.name}.partial")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_bundle(folder: Path) -> bool:
    try:
        Bundle.load(folder)
    except BundleError:
        return False
    return True


def _check_inputs(given: str, real: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    for source in filter(None, inputs):
        source_real = Path(source).resolve()
        if source_real == real:
            raise OutputError(f"-o {given} is the input {source}; write the bundle to a new folder")
        if _inside(source_real, real):
            raise OutputError(f"-o {given} contains the input {source}; write the bundle to a new folder")
        if _inside(real, source_real):
            raise OutputError(f"-o {given} lies inside the input {source}; write the bundle elsewhere")


def check_bundle_output(output: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None],
                        overwrite: bool, resume: bool) -> Path:
    """Fail before any work unless ``output`` may receive a new bundle; returns it as a path."""
    if not output:
        raise OutputError("no output bundle folder given (-o)")
    path = Path(output)
    real = path.resolve()
    if _inside(Path.cwd().resolve(), real):
        raise OutputError(f"-o {output} is the current folder or contains it; name a new folder for the bundle, "
                          "e.g. -o out/bundle")
    if path.is_symlink():
        raise OutputError(f"-o {output} is a symbolic link; name the folder itself (links are never replaced)")
    if path.exists() and not path.is_dir():
        raise OutputError(f"-o {output} exists and is not a folder; choose a new folder for the bundle")
    _check_inputs(str(output), real, inputs)
    if not path.is_dir() or not any(path.iterdir()):
        return path
    if resume:
        raise OutputError(f"{output} already holds a finished bundle; --resume only continues an interrupted run "
                          "(retrain with --overwrite instead)" if _is_bundle(path) else
                          f"{output} exists and is not a lulc bundle; choose a new or empty folder")
    if not overwrite:
        raise OutputError(f"bundle folder {output} already exists and is not empty (use --overwrite to replace a bundle)")
    if not _is_bundle(path):
        raise OutputError(f"{output} is not a lulc bundle (no valid bundle.json); --overwrite only replaces bundles: "
                          "choose a new or empty folder")
    return path


@contextmanager
def staged(output: Path, overwrite: bool, resume: bool, resumable: Callable[[Path], bool]) -> Iterator[Path]:
    """The staging folder for a run; removed if the run fails, unless ``resumable(staging)``.

    A leftover checkpoint is only continued with ``resume`` and only dropped with ``overwrite``.
    """
    staging = staging_path(output)
    if resume and not resumable(staging):
        raise OutputError(f"nothing to resume: no checkpoint in {staging}; start the run without --resume")
    if not resume and resumable(staging) and not overwrite:
        raise OutputError(f"an interrupted run left a checkpoint in {staging}: continue it with --resume, "
                          "or start over with --overwrite")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {staging}: {exc.strerror}") from None
    try:
        yield staging
    except BaseException:
        if staging.exists() and not resumable(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, output: Path) -> None:
    """Rename the finished bundle into place; a bundle already there is replaced only now.

    The old bundle is first moved aside (a rename), so at no moment is there neither.
    """
    old = output.with_name(f".{output.name}.replaced")
    if output.is_dir() and any(output.iterdir()):
        if not _is_bundle(output):  # checked before the run; refuse if it changed meanwhile
            raise OutputError(f"{output} is no longer a lulc bundle; it was not replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError as exc:
        if old.exists():
            os.replace(old, output)
        raise OutputError(f"cannot move the finished bundle to {output}: {exc.strerror}") from None
    shutil.rmtree(old, ignore_errors=True)
