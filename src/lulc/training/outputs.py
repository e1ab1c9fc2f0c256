"""Where a training run may write its bundle, and how the bundle gets there.

The folder rules are the runtime's (:func:`lulc.runtime.io.outputs.check_output_folder`, README
"Safety"): the bundle folder must not be, contain or lie inside an input, nor hold the
working folder, and an existing non-empty folder is replaced only with ``--overwrite`` and
only if it is a lulc bundle (a valid ``bundle.json``). Training adds ``--resume``: it
continues a checkpoint and never replaces a finished bundle. The bundle is assembled in
``.NAME.partial`` beside the output, under a lock against a second run aimed at the same
folder, and renamed into place when complete; a failed run removes the staging folder
unless it holds a checkpoint that ``--resume`` can continue.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, OutputError
from lulc.runtime.io.outputs import check_output_folder, locked, publish_folder, temp_path


def is_bundle(folder: Path) -> bool:
    try:
        Bundle.load(folder)
    except BundleError:
        return False
    return True


def check_bundle_output(output: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None],
                        overwrite: bool, resume: bool) -> Path:
    """Fail before any work unless ``output`` may receive a new bundle; returns it as a path."""
    if not output:
        raise OutputError("no output bundle folder given (-o)")
    path = Path(output)
    if resume and path.is_dir() and not path.is_symlink() and any(path.iterdir()):
        raise OutputError(f"{output} already holds a finished bundle; --resume only continues an interrupted run "
                          "(retrain with --overwrite instead)" if is_bundle(path) else
                          f"{output} exists and is not a lulc bundle; choose a new or empty folder")
    return check_output_folder(path, inputs, overwrite, is_bundle, "bundle")


@contextmanager
def staged(output: Path, overwrite: bool, resume: bool, resumable: Callable[[Path], bool]) -> Iterator[Path]:
    """The locked staging folder for a run; removed if the run fails, unless ``resumable(staging)``.

    A leftover checkpoint is only continued with ``resume`` and only dropped with ``overwrite``.
    """
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {output.parent}: {exc.strerror}") from None
    staging = temp_path(output, "partial")
    with locked(output):
        if resume and not resumable(staging):
            raise OutputError(f"nothing to resume: no checkpoint in {staging}; start the run without --resume")
        if not resume and resumable(staging) and not overwrite:
            raise OutputError(f"an interrupted run left a checkpoint in {staging}: continue it with --resume, "
                              "or start over with --overwrite")
        try:
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
    """Rename the finished bundle into place (a bundle already there is replaced only now)."""
    publish_folder(staging, output, is_bundle, "bundle")
