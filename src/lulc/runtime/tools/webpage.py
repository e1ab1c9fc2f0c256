"""Where the browser page and its JavaScript libraries are, in a checkout and in an installed wheel.

The page (``index.html``, ``style.css``, ``js/``) lives in the repository's ``web/`` folder,
next to the three Python folders; the wheel ships it as ``lulc/web/``, next to
``lulc/runtime/``. Both are ``web`` beside this package's parent folder, so one rule finds it
in both layouts (``LULC_WEB_DIR`` overrides it, e.g. for a checkout's page with an installed
lulc).

The third-party libraries the page loads (Leaflet, geotiff.js, TF.js, onnxruntime-web) are
listed in ``vendor.txt``: in a checkout they are in ``web/node_modules`` after ``npm ci
--prefix web``; ``pip wheel .`` copies exactly those files into the wheel (``setup.py``), so an
installed lulc serves the page offline without Node or npm.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

#: the list of library files, relative to ``node_modules``, in the web folder
VENDOR_LIST = "vendor.txt"
#: the TF.js parity gate of ``lulc export --target tfjs`` (runs in Node on the vendored tf.min.js)
TFJS_PARITY_SCRIPT = "tools/tfjs_parity.mjs"
#: what the TF.js parity script loads; its presence means the gate can run (with ``node``)
TFJS_NODE_LIB = "node_modules/@tensorflow/tfjs/dist/tf.min.js"


def web_root() -> Path:
    """The folder holding ``index.html``: ``$LULC_WEB_DIR``, else ``web/`` of the package.

    Installed wheel: ``<site-packages>/lulc/web``; checkout (``src/lulc/...``): ``<repo>/web``.
    """
    override = os.environ.get("LULC_WEB_DIR")
    if override:
        return Path(override).expanduser().resolve()
    here = Path(__file__).resolve().parents[2]  # .../lulc
    installed = here / "web"
    return installed if installed.is_dir() else here.parents[1] / "web"


@lru_cache(maxsize=8)
def _read_vendor_list(path: Path) -> tuple[str, ...]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def vendored_libs(root: Path | None = None) -> tuple[str, ...]:
    """The library files the page needs, as paths relative to ``root / "node_modules"``."""
    path = (root or web_root()) / VENDOR_LIST
    return _read_vendor_list(path) if path.is_file() else ()


def missing_libs(root: Path | None = None) -> list[str]:
    """Library files of :func:`vendored_libs` that are not in ``root / "node_modules"``."""
    root = root or web_root()
    return [rel for rel in vendored_libs(root) if not (root / "node_modules" / rel).is_file()]


def libs_hint(root: Path | None = None) -> str:
    """One line on how to get the libraries when :func:`missing_libs` is not empty."""
    root = root or web_root()
    if (root / "package-lock.json").is_file():  # a checkout
        return f"run `npm ci --prefix {root} --ignore-scripts` (or `make venv`)"
    return ("this lulc was built without them: build the wheel in a checkout after `npm ci --prefix web`, "
            "or point LULC_WEB_DIR at such a checkout's web/ folder")


def tfjs_parity_script(root: Path | None = None) -> Path:
    """The Node script of the TF.js export's parity gate (needs ``node`` and :data:`TFJS_NODE_LIB`)."""
    return (root or web_root()) / TFJS_PARITY_SCRIPT
