"""The wheel as an edge box gets it: built from this checkout, installed into a fresh virtualenv
with only its base dependencies (no TensorFlow), then ``lulc-infer`` and ``lulc serve`` run
from that virtualenv, outside the checkout.

This is what an editable dev install cannot show: a subpackage or a page file missing from
the wheel, or code that finds its data next to the source tree instead of the package. The
bundle is the session's trained one, exported to ONNX by the dev environment; the map from
the wheel must equal the dev environment's ``lulc-infer`` map pixel for pixel.

pip fetches the base dependencies from PyPI (or its cache): ~20 s with a warm cache.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.tools.webpage import vendored_libs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"src/lulc/runtime": "lulc/runtime", "src/lulc/training": "lulc/training", "src/lulc/export": "lulc/export"}
PAGE = ["lulc/web/index.html", "lulc/web/style.css", "lulc/web/vendor.txt", "lulc/web/tools/tfjs_parity.mjs"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing into the checkout or the dev venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LULC_WEB_DIR", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.executable).parent)))
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(REPO), "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("lulc-*.whl")
    return whl


@pytest.fixture(scope="module")
def edge_venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel and its base dependencies only; returns its bin/."""
    root = tmp_path_factory.mktemp("edge") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    bin_dir = root / ("Scripts" if os.name == "nt" else "bin")
    proc = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                          capture_output=True, text=True, timeout=900, cwd=root, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bin_dir


def test_wheel_holds_every_package_and_the_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in FOLDERS.items():
        for source in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in source.parts:
                rel = source.relative_to(REPO / folder).as_posix()
                assert f"{package}/{rel}" in names, f"{folder}/{rel} is not in the wheel"
    assert {"lulc/runtime/backends/ort.py", "lulc/training/models/__init__.py"} <= names
    # never bare top-level packages, never the tests
    assert not [n for n in names if n.split("/")[0] in ("src", "runtime", "training", "export", "tests", "web")]
    for name in PAGE + [f"lulc/web/js/{p.name}" for p in (REPO / "web" / "js").glob("*.js")]:
        assert name in names, name
    libs = vendored_libs(REPO / "web")
    assert libs and {f"lulc/web/node_modules/{p}" for p in libs} <= names
    # only the listed library files: not all of node_modules (playwright, source maps, ...)
    assert len([n for n in names if "/node_modules/" in n]) == len(libs)
    assert not [n for n in names if n.startswith("lulc/web/tests") or n.endswith("package.json")]


def test_no_tensorflow_in_the_edge_install(edge_venv):
    proc = subprocess.run([str(edge_venv / "python"), "-c", "import tensorflow"],
                          capture_output=True, text=True, cwd=edge_venv, env=clean_env())
    assert proc.returncode != 0 and "No module named 'tensorflow'" in proc.stderr
    code = ("import lulc.runtime, lulc.runtime.cli, lulc.runtime.infer, lulc.runtime.backends.ort, sys; "
            "import lulc.runtime.tools.webpage as w; print(w.web_root()); "
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'keras'))]")
    proc = subprocess.run([str(edge_venv / "python"), "-c", code], capture_output=True, text=True,
                          cwd=edge_venv, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    # the page is found in the installed package, not in this checkout
    web = Path(proc.stdout.strip())
    assert web.parts[-2:] == ("lulc", "web") and REPO not in web.parents and (web / "index.html").is_file()
    pip_check = subprocess.run([str(edge_venv / "python"), "-m", "pip", "check"], capture_output=True,
                               text=True, env=clean_env())
    assert pip_check.returncode == 0, pip_check.stdout


def test_edge_lulc_infer_matches_the_dev_environment(edge_venv, trained_bundle, tmp_path):
    image, _ = synthetic_scene(90, 110, seed=7)
    image[:, :10, :10] = 0  # some nodata
    src = write_raster(tmp_path / "scene.tif", image, descriptions=BANDS)
    maps = {}
    for name, cli in [("dev", Path(sys.executable).with_name("lulc-infer")), ("edge", edge_venv / "lulc-infer")]:
        out = tmp_path / f"{name}.tif"
        proc = subprocess.run([str(cli), str(trained_bundle), str(src), "-o", str(out), "--no-progress",
                               "--probabilities"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env=clean_env() if name == "edge" else None)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        with rasterio.open(out) as ds:
            maps[name] = ds.read()
            assert ds.tags()["LULC_BACKEND"] == "onnx"
    assert maps["edge"].shape == maps["dev"].shape == (1 + 3, 90, 110)
    np.testing.assert_array_equal(maps["edge"], maps["dev"])
    assert (maps["edge"][0, :10, :10] == 255).all() and (maps["edge"][0] != 255).mean() > 0.9


def test_edge_lulc_serve_serves_the_page(edge_venv, trained_bundle, tmp_path):
    proc = subprocess.Popen([str(edge_venv / "lulc"), "serve", str(trained_bundle), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=clean_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("lulc demo: http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[2]
        lib = "onnxruntime-web/dist/ort.min.mjs"
        assert lib in vendored_libs(REPO / "web")
        for path, expect in [("", b"<script type=\"module\" src=\"js/app.js\">"), ("js/app.js", b"lulcDemo"),
                             ("demo.json", b'"engines": ["onnx"]'), (f"node_modules/{lib}", b"onnxruntime")]:
            with urllib.request.urlopen(url + path, timeout=30) as resp:
                assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"
                assert expect in resp.read(), path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_edge_tfjs_parity_script_loads_the_vendored_tfjs(edge_venv):
    """The TF.js export gate's script runs from the installed page folder (no npm there)."""
    web = Path(subprocess.run([str(edge_venv / "python"), "-c", "import lulc.runtime.tools.webpage as w; print(w.web_root())"],
                              capture_output=True, text=True, check=True, env=clean_env()).stdout.strip())
    proc = subprocess.run(["node", str(web / "tools" / "tfjs_parity.mjs")], capture_output=True, text=True, timeout=120)
    # without arguments it prints its usage and exits 2, after TF.js loaded (a missing module exits 1)
    assert proc.returncode == 2 and "usage:" in proc.stderr, proc.stderr[-2000:]
