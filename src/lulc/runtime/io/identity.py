"""What a run's pixels depend on, as a key: a resumed run may only continue the same run.

A resume state (or a distributed run's finished parts) is trusted only for the run that
wrote it. Pixels depend on the model that actually runs (the artefact's checksum, not just
the bundle), its precision and engine, the tiling and output options, and the input's
content: a file rewritten at the same path must not contribute rows to the new map. Reading
every input byte to tell would cost as much as a run, so a file is known by its size, its
modification time and a hash of its head plus evenly spaced samples, or of all of it where
that is cheap.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

#: files up to this size are hashed whole
WHOLE = 64 * 2**20
#: otherwise the head (TIFF header and directory) and this many samples spread over the file
HEAD, SAMPLES, SAMPLE = 2**20, 64, 64 * 2**10


def file_identity(path: str | os.PathLike) -> dict:
    """Size, mtime and a content hash of a local file; a GDAL URL or a path that is not a
    local file is known by its name only."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path)}
    if not path.is_file():
        return {"path": str(path)}
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= WHOLE:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(fh.read(HEAD))
            step = (st.st_size - SAMPLE) // SAMPLES
            for i in range(1, SAMPLES + 1):
                fh.seek(min(i * step, st.st_size - SAMPLE))
                digest.update(fh.read(SAMPLE))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def inputs_identity(files: Iterable[str | os.PathLike], skip: Iterable[str | os.PathLike] = ()) -> list[dict]:
    """:func:`file_identity` of every file a raster reads (``rasterio``'s ``files``: a VRT and
    its sources), leaving out ``skip`` (a VRT the run itself writes anew each time)."""
    own = {Path(p).resolve() for p in skip}
    return [file_identity(f) for f in dict.fromkeys(map(str, files)) if Path(f).resolve() not in own]
