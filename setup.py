"""Build hooks that pyproject.toml cannot express (all metadata lives there).

1. Package discovery: ``src/lulc`` with *every* subpackage (``lulc.runtime.backends``,
   ``lulc.training.models``, ...), found here rather than listed by hand; the folder is the
   import name, so static tools resolve ``lulc.runtime`` without an install.
2. The browser page as package data: ``web/`` installs as ``lulc/web/`` (``index.html``,
   ``style.css``, ``js/``, the TF.js parity script), and the library files named in
   ``web/vendor.txt`` are copied from ``web/node_modules`` into the wheel, so ``lulc serve``
   works offline from an installed wheel (``lulc.runtime.tools.webpage.web_root()``).

A checkout without ``web/node_modules`` (no ``npm ci --prefix web`` yet) still builds a wheel,
with a warning: that wheel's ``lulc serve`` says in one line how to get the libraries.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
WEB_PACKAGE, WEB_FOLDER = "lulc.web", "web"
#: the page and the Node tool the runtime and export use (not web/tests, package*.json), as
#: data-only packages so that setuptools knows each folder it copies
WEB_DATA = {WEB_PACKAGE: ["index.html", "style.css", "vendor.txt"],
            f"{WEB_PACKAGE}.js": ["*.js"], f"{WEB_PACKAGE}.tools": ["*.mjs"]}


def lulc_packages() -> tuple[list[str], dict[str, str]]:
    """Every package under ``src/`` (``lulc`` and its subpackages) and the page's data packages."""
    return [*find_packages(str(HERE / "src")), *WEB_DATA], {"": "src", WEB_PACKAGE: WEB_FOLDER}


def vendor_list() -> list[str]:
    lines = (line.strip() for line in (HERE / WEB_FOLDER / "vendor.txt").read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class BuildPyWithWebLibs(build_py):
    """``build_py`` that also copies the page's vendored libraries into ``lulc/web/node_modules``."""

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install serves web/ in place
            self._vendored = self.vendor_web_libs()

    def vendor_web_libs(self) -> list[str]:
        src = HERE / WEB_FOLDER / "node_modules"
        dst = Path(self.build_lib, *WEB_PACKAGE.split("."), "node_modules")
        files = vendor_list()
        if not src.is_dir():
            self.warn(f"{src} is missing (run `npm ci --prefix web`): the wheel ships the browser page without its "
                      "libraries, and `lulc serve` will say how to get them")
            return []
        missing = [rel for rel in files if not (src / rel).is_file()]
        if missing:
            raise SystemExit(f"web/node_modules lacks {', '.join(missing)} (web/vendor.txt); "
                             "run `npm ci --prefix web` to install the versions in web/package-lock.json")
        outputs = []
        for rel in files:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
            outputs.append(str(target))
        return outputs

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *getattr(self, "_vendored", [])]


def private_build_base() -> str:
    """A fresh build folder per build, removed afterwards: setuptools never cleans ``build/``, so
    a module deleted from the source (or a library dropped from vendor.txt) would otherwise
    stay in every later wheel, and two builds of one checkout would share it."""
    path = tempfile.mkdtemp(prefix="lulc-build-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


packages, package_dir = lulc_packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={**WEB_DATA, "lulc.runtime": ["py.typed"]},  # typed: mypy checks code that imports it
    cmdclass={"build_py": BuildPyWithWebLibs},
    options={"build": {"build_base": private_build_base()}},
)
