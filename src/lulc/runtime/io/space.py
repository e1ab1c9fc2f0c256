"""Free space where outputs go: checked before a run, and named when a write runs out of it.

A full disk is the one write failure users cannot read from GDAL's messages (a "failed block
write", or nothing at all), so a failed write asks the file system: where no room is left,
the error names the file system (its mount point and type) and how much the run needs there.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from lulc.runtime.core.errors import NoSpaceError, OutputError

#: below this many free bytes a failed write is taken to be the full disk's doing
NEARLY_FULL = 2**20
_ENOSPC_TEXT = ("no space left", "disk full", "not enough space")


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use in ``folder`` (None where unknown)."""
    try:
        fs = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return fs.f_bavail * fs.f_frsize


def file_system(folder: Path) -> str:
    """``folder``'s file system as users know it: its mount point and type (Linux), else the folder."""
    real = str(Path(folder).resolve())
    best = ("", "")
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0]):
                    best = (point, fields[2])
    except OSError:
        pass
    return f"the {best[1]} file system at {best[0]}" if best[0] else f"the device of {folder}"


def size_text(n: float) -> str:
    """Bytes in the unit a user reads at a glance (kB, MB, GB: powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def is_out_of_space(cause: BaseException | str | None, folder: Path) -> bool:
    """Whether a failed write ran out of room: ENOSPC/EDQUOT in the exception chain, a
    message saying so, or hardly a byte left in ``folder``."""
    seen = 0
    exc = cause if isinstance(cause, BaseException) else None
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc).lower() for text in _ENOSPC_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    if isinstance(cause, str) and any(text in cause.lower() for text in _ENOSPC_TEXT):
        return True
    free = free_bytes(folder)
    return free is not None and free < NEARLY_FULL


def no_space(final: Path, need: int | None) -> NoSpaceError:
    """The one line for a run that cannot write ``final`` for want of space (the free space
    it names is measured when the line is shown, once the run's work files are gone)."""
    where = file_system(final.parent)

    def describe() -> str:
        free = free_bytes(final.parent)
        have = f"{size_text(free)} free" if free is not None else "free space unknown"
        needs = f"; the run needs up to {size_text(need)} there" if need else ""
        return f"cannot write {final}: no space left on {where} ({have}{needs}); free some space and run again"

    return NoSpaceError(describe, final, need)


def write_error(final: Path, cause: BaseException | str, need: int | None = None) -> OutputError:
    """A failed write of ``final`` as one line: the full disk named as such, else GDAL's reason."""
    if isinstance(cause, NoSpaceError):
        return cause
    if is_out_of_space(cause, final.parent):
        return no_space(final, need)
    reason = cause if isinstance(cause, str) else str(getattr(cause, "__context__", None) or cause)
    return OutputError(f"cannot write {final}: {reason.splitlines()[0] if reason else type(cause).__name__}")


def require_space(final: Path, need: int) -> None:
    """Refuse before any work a run whose ``need`` bytes of uncompressed work files (which it
    cannot do without) do not fit beside ``final``."""
    free = free_bytes(final.parent)
    if free is not None and free < need:
        raise no_space(final, need)
