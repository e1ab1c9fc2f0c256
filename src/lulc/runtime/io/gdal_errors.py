"""Errors GDAL and libtiff report without raising: caught while lulc writes, never lost.

A write that fails inside GDAL does not always come back as a Python exception: on a nearly
full disk the COG driver returned normally after libtiff's ``_tiffWriteProc: No space left
on device`` (printed straight to stderr by libtiff's default handler) and the truncated file
was renamed into place. So while a run writes, every message libtiff's global error handler
and rasterio's GDAL error log receive is recorded here (and kept off stderr), and the writer
asks :meth:`Capture.failed` after each step: an error there fails the step even where no
exception came back.

libtiff is reached through ctypes: its ``TIFFSetErrorHandler`` is set on every libtiff
loaded in the process (GDAL's copy and any other), once, on first use.
"""
from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: rasterio's loggers that carry GDAL's error and warning messages
GDAL_LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._io", "rasterio._base")

_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


class _Record:
    """Messages since the first open capture; empty (and ignored) while no capture is open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.messages: list[tuple[bool, str]] = []  # (is an error, text)
        self.installed = False

    def add(self, message: str, error: bool = True) -> bool:
        """Keep ``message`` while a capture is open; False where none is (let it through)."""
        with self.lock:
            if self.open:
                self.messages.append((error, message))
                return True
        return False


_RECORD = _Record()


def _format(fmt: bytes | None, args: int | None) -> str:
    """libtiff's message: ``fmt`` applied to its ``va_list`` where the ABI lets ctypes pass it
    on (x86-64 and arm64 hand a va_list over as a pointer), else the format as it stands."""
    text = (fmt or b"").decode("utf-8", "replace")
    if args is None or sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return text
    buffer = ctypes.create_string_buffer(1024)
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    libc.vsnprintf(buffer, len(buffer), fmt, args)
    return buffer.value.decode("utf-8", "replace")


@_HANDLER
def _tiff_error(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
    message = f"{(module or b'libtiff').decode('utf-8', 'replace')}: {_format(fmt, args)}"
    if not _RECORD.add(message):
        sys.stderr.write(message + "\n")  # libtiff's own behaviour outside a capture


class _GdalLogFilter(logging.Filter):
    """Takes rasterio's GDAL messages off the log while a capture is open: errors fail the
    step, warnings (e.g. "a strile cannot be rewritten in place", an echo of a failed write)
    are kept only to be shown with an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        error = record.levelno >= logging.ERROR or "signalled an error" in message
        if error or record.levelno >= logging.WARNING:
            return not _RECORD.add(message, error)
        return True


def _loaded_libtiffs() -> list[str]:
    """Paths of the libtiff shared objects mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _install() -> None:
    """Set the handlers once per process (rasterio must be imported: GDAL loads libtiff)."""
    import rasterio  # noqa: F401  (loads GDAL and its libtiff)

    with _RECORD.lock:
        if _RECORD.installed:
            return
        _RECORD.installed = True
    for path in _loaded_libtiffs():
        try:
            lib = ctypes.CDLL(path)
            lib.TIFFSetErrorHandler.argtypes = [_HANDLER]
            lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
            lib.TIFFSetErrorHandler(_tiff_error)
        except (OSError, AttributeError):  # not a usable libtiff: GDAL's exceptions still apply
            continue
    log_filter = _GdalLogFilter()
    for name in GDAL_LOGGERS:
        logging.getLogger(name).addFilter(log_filter)


@dataclass
class Capture:
    """The messages recorded since this capture opened."""

    start: int

    def messages(self) -> list[str]:
        """Errors and warnings since the capture opened, in order."""
        with _RECORD.lock:
            return [text for _, text in _RECORD.messages[self.start :]]

    def failed(self) -> str | None:
        """The first error reported since the capture opened (None: none)."""
        with _RECORD.lock:
            return next((text for error, text in _RECORD.messages[self.start :] if error), None)


@contextmanager
def captured() -> Iterator[Capture]:
    """Record GDAL/libtiff errors (from every thread) for the duration of the block."""
    _install()
    with _RECORD.lock:
        _RECORD.open += 1
        capture = Capture(len(_RECORD.messages))
    try:
        yield capture
    finally:
        with _RECORD.lock:
            _RECORD.open -= 1
            if not _RECORD.open:
                _RECORD.messages.clear()
