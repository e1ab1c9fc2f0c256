"""Crash-consistent resume state of a streaming run: finished block rows, verified on reload.

After each block row the partial map is flushed and fsynced *before* the state that counts
the row is written (atomically, fsynced too), so a SIGKILL at any instant leaves a state
that never claims more than is on disk. The state also keeps a CRC of every finished row's
pixels; a resumed run reads those rows back and starts over if anything differs (a
damaged partial file, a state from another run), so a resume yields the uninterrupted
run's pixels or starts from scratch, never a map with holes.

The carried overlap strip is stored only over the columns it covers, so a sparse raster's
state stays proportional to the pixels actually classified.
"""
from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from lulc.runtime.io.outputs import replace_atomically, temp_path
from lulc.runtime.io.space import write_error

logger = logging.getLogger(__name__)


def _write_durably(path: Path, final: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary sibling, then fsync it and rename it over ``path``; a failure
    (a full disk) leaves no temporary file and is one line about ``final``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        replace_atomically(tmp, path)
    except OSError as exc:
        raise write_error(final, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def crc_bands(bands: Iterable[np.ndarray], crc: int = 0) -> int:
    """CRC-32 of the bands' pixels in order, continuing ``crc``."""
    for band in bands:
        crc = zlib.crc32(np.ascontiguousarray(band).data, crc)
    return crc


class ResumeState:
    """The hidden ``.NAME.resume.npz`` beside an output: one file, so it is replaced in one rename."""

    def __init__(self, final: Path, key: dict):
        self.final = final
        self.path = temp_path(final, "resume.npz")
        self.key = json.dumps(key, sort_keys=True)
        self.row_crcs: list[int] = []

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> tuple[int, np.ndarray | None, int]:
        """(rows done, carried strip or None, its first column); (0, None, 0) where there is
        nothing usable: no state, a state of other inputs/options, or an unreadable one."""
        if not self.path.exists():
            return 0, None, 0
        try:
            with np.load(self.path, allow_pickle=False) as data:
                key, rows = str(data["key"]), int(data["rows_done"])
                crcs, strip, x0 = [int(c) for c in data["row_crcs"]], data["strip"], int(data["x0"])
        except (OSError, ValueError, KeyError, zlib.error) as exc:
            logger.warning("the resume state cannot be read (%s); starting over", exc)
            return 0, None, 0
        if key != self.key:
            logger.warning("the resume state beside the output was written for other inputs or options; starting over")
            return 0, None, 0
        if len(crcs) != rows:
            logger.warning("the resume state is inconsistent; starting over")
            return 0, None, 0
        self.row_crcs = crcs
        return rows, strip, x0

    def save(self, rows_done: int, pending: np.ndarray, row_crc: int) -> None:
        """Record one more finished block row (its pixels must already be on disk)."""
        self.row_crcs = [*self.row_crcs[: rows_done - 1], row_crc]
        used = np.flatnonzero(pending.any(axis=(0, 1)))
        x0, x1 = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 0)

        def write(path: Path) -> None:
            with open(path, "wb") as fh:
                np.savez(fh, key=np.array(self.key), rows_done=np.int64(rows_done),
                         row_crcs=np.array(self.row_crcs, dtype=np.int64), strip=pending[:, :, x0:x1], x0=np.int64(x0))

        _write_durably(self.path, self.final, write)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.row_crcs = []
