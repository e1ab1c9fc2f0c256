"""A run's outputs published together: staged, verified, recorded, then renamed, the map last.

The map, its ``.aux.xml``/``.qml`` sidecars and the quicklook are one result. Each is written
and read back under a hidden name beside its final path (``.NAME.staged.EXT``); only when all of
them are complete does a small record (``.MAP.publish.json``: every file's final path and
SHA-256) go to disk, and then the renames follow, the map last. So:

* a failure before the record (a full disk, a bad block) leaves every previous file as it was;
* a kill between the record and the last rename leaves the record, from which ``--resume``
  finishes the renames: a file already at its final path with the recorded checksum is this
  run's own, and the rest are still staged.

The work files of the run (the partial map and its resume state, a distributed run's parts)
are dropped once the record is on disk, when nothing needs them any more.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lulc.runtime.core.bundle import sha256sum
from lulc.runtime.io.outputs import fsync_folder, replace_atomically, temp_path
from lulc.runtime.io.space import write_error

logger = logging.getLogger(__name__)

#: the output that is renamed last: its presence means the run is complete
MAP = "output"


def _staged(final: Path) -> Path:
    """``.NAME.staged.EXT``: hidden, beside the final path, with its extension (drivers check it)."""
    return temp_path(final, "staged" + final.suffix)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Publication:
    """The outputs of one run (``what -> final path``, the map under ``"output"``)."""

    def __init__(self, outputs: dict[str, Path]):
        self.outputs = {what: Path(path) for what, path in outputs.items()}
        self.final = self.outputs[MAP]
        self.record = temp_path(self.final, "publish.json")
        #: work files of the run, dropped once the record is written
        self.work_files: list[Path] = []
        #: bytes the run needs beside its outputs at most (for the line a full disk gives)
        self.need: int | None = None

    def staged(self, what: str) -> Path:
        """Where output ``what`` is written before it is published."""
        return _staged(self.outputs[what])

    def _order(self) -> list[str]:
        return [*(w for w in self.outputs if w != MAP), MAP]

    def commit(self) -> None:
        """Record the staged files and rename them into place, the map last."""
        entries = [{"what": what, "final": str(self.outputs[what]), "sha256": sha256sum(self.staged(what))}
                   for what in self._order()]
        staged = self.record.with_name(self.record.name + ".tmp")
        try:
            staged.write_text(json.dumps(entries))
            replace_atomically(staged, self.record)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise write_error(self.final, exc, self.need) from exc
        self._finish(entries)

    def _finish(self, entries: list[dict]) -> None:
        """The renames after the record, then the record and the work files go."""
        for path in self.work_files:
            _remove(path)
        for entry in entries:
            final = Path(entry["final"])
            if _staged(final).exists():
                replace_atomically(_staged(final), final)
        self.record.unlink(missing_ok=True)
        fsync_folder(self.final.parent)

    def discard(self, work_files: bool = False) -> None:
        """Drop the staged files (and with ``work_files`` the run's work files too)."""
        for what in self.outputs:
            self.staged(what).unlink(missing_ok=True)
        if work_files:
            for path in self.work_files:
                _remove(path)

    def _entries(self) -> list[dict] | None:
        """The record's entries where it names exactly these outputs (None: no usable record)."""
        try:
            entries = json.loads(self.record.read_text())
            named = {e["what"]: Path(e["final"]) for e in entries}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entries if named == self.outputs else None

    def own_outputs(self) -> set[Path]:
        """Outputs already at their final path that an interrupted publication of these same
        outputs put there (same checksum): ``--resume`` may finish what they belong to."""
        entries = self._entries() or []
        return {Path(e["final"]) for e in entries if Path(e["final"]).is_file()
                and sha256sum(Path(e["final"])) == e["sha256"]}

    def finish_interrupted(self) -> bool:
        """Complete an interrupted publication of these outputs; False where there is none to
        complete (no record, other outputs, or a file that is neither staged nor in place)."""
        entries = self._entries()
        if entries is None:
            return False
        for entry in entries:
            final = Path(entry["final"])
            done = final.is_file() and sha256sum(final) == entry["sha256"]
            if not done and not (_staged(final).is_file() and sha256sum(_staged(final)) == entry["sha256"]):
                logger.warning("the interrupted run's %s cannot be completed; starting over", entry["what"])
                self.record.unlink(missing_ok=True)
                return False
        logger.info("completing the interrupted run's renames of %s", self.final)
        self._finish(entries)
        return True
