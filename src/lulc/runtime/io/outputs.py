"""Output paths a run may write, checked before any work, and locked against a second writer.

The rules (README, "Safety"): an output must not be, or resolve to, an input, the bundle
or another output of the same run; only a regular file (or nothing) is replaced, and only
with ``--overwrite``; a folder, a device or a symbolic link is never replaced. Results are
written under a hidden temporary name in the output's folder and renamed at the end, so
the checks here are all that stands between a typo and a user's lost file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lulc.runtime.core.errors import OutputError

PathLike = str | os.PathLike


def temp_path(final: Path, suffix: str) -> Path:
    """A hidden working file beside ``final`` (same folder, so the last rename is atomic)."""
    return final.with_name(f".{final.name}.{suffix}")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names, following links; None where nothing exists."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(path: PathLike, overwrite: bool, what: str = "output") -> Path:
    """Fail early (before any work) unless ``path`` may be (re)written as a result file."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"{what} {path} is not a file name")
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot check {what} {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(f"{what} {path} is a symbolic link; name the file itself (links are never replaced)")
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{what} {path} is a folder, not a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{what} {path} exists and is not a regular file; it is never replaced")
        if not overwrite:
            raise OutputError(f"{what} {path} already exists (use --overwrite to replace it)")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: folder {parent} is not writable")
    return path


def check_outputs(outputs: dict[str, PathLike], inputs: Iterable[PathLike] = (),
                  protected: Iterable[PathLike] = (), overwrite: bool = False,
                  own: Collection[Path] = ()) -> dict[str, Path]:
    """Check every output of a run against the others, the inputs and ``protected`` folders
    (the bundle); returns the outputs as paths, in the order given. ``own``: outputs this
    same run already put in place before it was interrupted (they exist, yet are no one
    else's file).

    Paths are compared after resolving links and by (device, inode), so a symlink, a
    hard link or a ``./x/../`` spelling of an input is caught too.
    """
    checked = {what: check_output(path, overwrite or Path(path) in own, what) for what, path in outputs.items()}
    resolved = {what: p.resolve() for what, p in checked.items()}
    sources = [(Path(p), Path(p).resolve(), _identity(Path(p))) for p in inputs]
    folders = [Path(p).resolve() for p in protected]
    seen: dict[Path, str] = {}
    for what, real in resolved.items():
        if real in seen:
            raise OutputError(f"{what} {checked[what]} is the same file as the {seen[real]}; give each output its own name")
        seen[real] = what
        ident = _identity(checked[what])
        for given, source, source_id in sources:
            if real == source or (ident is not None and ident == source_id):
                raise OutputError(f"{what} {checked[what]} is the input {given}; write the result to another file")
        for folder in folders:
            if _inside(real, folder):
                raise OutputError(f"{what} {checked[what]} lies inside the bundle {folder}; write it elsewhere")
    return checked


class OutputBusy(OutputError):
    """Another process holds the lock of an output."""


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a hidden ``.lock`` file beside it) for the block.

    ``flock`` locks die with their process, so a killed run never leaves a stale lock; the
    lock file is removed on release, and a lock taken on a file that was just removed is
    retried on the new one.
    """
    lock = temp_path(path, "lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputBusy(f"another run is writing {path}; wait for it to finish or choose another output") from None
            raise OutputError(f"cannot lock {path}: {exc.strerror}") from None
        if _identity(lock) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            break
        os.close(fd)  # the holder released and removed it between our open and flock
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def locked_all(paths: Iterable[Path]) -> Iterator[None]:
    """:func:`locked` for several outputs, taken in a fixed order (no deadlock between runs)."""
    with ExitStack() as stack:
        for path in sorted({Path(p).resolve() for p in paths}):
            stack.enter_context(locked(path))
        yield


def replace_atomically(staged: Path, final: Path) -> None:
    """Move a finished temporary file onto ``final``, durable before the rename is."""
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staged, final)
    fsync_folder(final.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_folder(path: PathLike, inputs: Iterable[PathLike | None], overwrite: bool,
                        is_ours: Callable[[Path], bool], kind: str) -> Path:
    """Fail before any work unless the folder ``path`` may receive a new ``kind`` (bundle,
    stack...): it must not be, contain or lie inside an input, nor hold the working folder;
    a non-empty folder is replaced only with ``overwrite`` and only if ``is_ours`` says it
    is a ``kind`` that lulc wrote."""
    path = Path(path)
    real = path.resolve()
    if _inside(Path.cwd().resolve(), real):
        raise OutputError(f"-o {path} is the current folder or contains it; name a new folder for the {kind}")
    if path.is_symlink():
        raise OutputError(f"-o {path} is a symbolic link; name the folder itself (links are never replaced)")
    if path.exists() and not path.is_dir():
        raise OutputError(f"-o {path} exists and is not a folder; choose a new folder for the {kind}")
    for source in inputs:
        if source is None:
            continue
        source_real = Path(source).resolve()
        if _inside(source_real, real):
            raise OutputError(f"-o {path} is or contains the input {source}; write the {kind} to a new folder")
        if _inside(real, source_real):
            raise OutputError(f"-o {path} lies inside the input folder {source}; write the {kind} elsewhere")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise OutputError(f"{kind} folder {path} already exists and is not empty (use --overwrite to replace a {kind})")
        if not is_ours(path):
            raise OutputError(f"{path} is not a lulc {kind}; --overwrite only replaces a {kind} lulc wrote: "
                              "choose a new or empty folder")
    return path


def publish_folder(staging: Path, output: Path, is_ours: Callable[[Path], bool], kind: str) -> None:
    """Rename a finished folder into place; one already there is replaced only now, and only
    if it is still ours. The old one is first moved aside, so at no moment is there neither."""
    old = temp_path(output, "replaced")
    if output.is_dir() and any(output.iterdir()):
        if not is_ours(output):  # checked before the run; refuse if it changed meanwhile
            raise OutputError(f"{output} is no longer a lulc {kind}; it was not replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output, old)
    elif output.is_dir():
        output.rmdir()
    try:
        os.replace(staging, output)
    except OSError as exc:
        if old.exists():
            os.replace(old, output)
        raise OutputError(f"cannot move the finished {kind} to {output}: {exc.strerror}") from None
    shutil.rmtree(old, ignore_errors=True)
    fsync_folder(output.parent)
