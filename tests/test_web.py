"""The browser demo: ``lulc serve`` unit checks, and the page end to end in headless Chromium.

The end-to-end test is the only proof that the JavaScript port of the tiling, nodata and
blending rules (web/js/tiling.js) matches ``lulc-infer``: it classifies a raster in the page
and compares the class map pixel by pixel with the Python runtime's output.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import MANIFEST
from lulc.runtime.core.errors import BackendUnavailable
from lulc.runtime.infer import InferOptions, run_inference
from lulc.runtime.tools.serve import make_server, server_url
from lulc.runtime.tools.webpage import web_root

CHROMIUM = Path("/usr/bin/chromium")
E2E_SCRIPT = web_root() / "tests" / "e2e.mjs"
#: float32 sums are added in another order in the page, which may flip exact near-ties only
MIN_AGREEMENT = 0.995


@pytest.fixture
def sample(tmp_path) -> Path:
    """A 4-band scene whose size is no multiple of the stride, with a nodata block that
    covers a whole tile (the page must skip it) and scattered nodata pixels."""
    image, _ = synthetic_scene(150, 200, seed=3)
    image[:, :70, :70] = 0
    image[2, 100:104, 120:150] = 0
    return write_raster(tmp_path / "sample.tif", image, descriptions=BANDS)


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    """Files the page must refuse with a readable message, keyed by the expected wording."""
    not_tiff = tmp_path / "notes.tif"
    not_tiff.write_text("not a GeoTIFF")
    three = write_raster(tmp_path / "three_bands.tif", synthetic_scene(32, 32)[0][:3])
    huge = tmp_path / "huge.tif"
    # Only the header is big: sparse tiles are never written, so the file stays tiny.
    with rasterio.open(huge, "w", driver="GTiff", width=30000, height=30000, count=4, dtype="uint16",
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(500000, 5800000, 10, 10)):
        pass
    return {"is not a GeoTIFF": not_tiff, "has 3 bands but the model expects 4": three,
            "budget; crop it or classify it with lulc-infer": huge}


@contextmanager
def running(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_url(server)
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def test_serve_routes_and_isolation(trained_bundle, sample):
    with running(make_server(trained_bundle, sample, port=0)) as url:
        status, headers, body = fetch(url + "demo.json")
        assert status == 200 and json.loads(body) == {"bundle": "bundle/", "engines": ["onnx"],
                                                       "sample": "sample.tif", "sample_name": "sample.tif"}
        # COOP/COEP make the page cross-origin isolated: threaded WASM needs it
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert fetch(url + "bundle/" + MANIFEST)[0] == 200
        assert fetch(url + "sample.tif")[2] == sample.read_bytes()
        assert fetch(url + "index.html")[0] == 200
        assert fetch(url + "bundle/%2e%2e/%2e%2e/" + sample.name)[0] == 404


def test_serve_refuses_bundle_without_web_artefact(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    del manifest["artifacts"]["onnx"]
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["serve", str(bundle_copy), "--port", "0"])
    assert result.exit_code == 1
    assert "no artefact the browser can run" in result.output and "Traceback" not in result.output


def test_serve_missing_sample(trained_bundle, tmp_path):
    result = CliRunner().invoke(main, ["serve", str(trained_bundle), "--sample", str(tmp_path / "nope.tif")])
    assert result.exit_code == 1 and "sample raster not found" in result.output


def _browser_stack() -> None:
    missing = [what for what, ok in [("node", shutil.which("node")), (str(CHROMIUM), CHROMIUM.exists()),
                                     ("web/node_modules", (web_root() / "node_modules" / "playwright-core").is_dir())]
               if not ok]
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: run `make test` (it installs them)")


@contextmanager
def lulc_serve(bundle: Path, sample: Path):
    """``lulc serve`` in a subprocess, as a user runs it; yields the URL it prints."""
    cli = Path(sys.executable).with_name("lulc")
    proc = subprocess.Popen([str(cli), "serve", str(bundle), "--sample", str(sample), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("lulc demo: http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else line
        yield line.split()[2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


#: (engine, backend asked for, backend the page must report): the WASM runs, the GPU engines on
#: SwiftShader, and "auto", which must not pick SwiftShader's software WebGPU/WebGL over WASM
PAGE_RUNS = [("onnx", "wasm", "wasm"), ("tfjs", "wasm", "wasm"), ("tfjs", "webgl", "webgl"),
             ("tfjs", "webgpu", "webgpu"), ("onnx", "webgpu", "webgpu"), ("onnx", "auto", "wasm")]


@pytest.fixture(scope="module")
def page_case(trained_bundle, tmp_path_factory) -> dict:
    """One bundle with both browser artefacts (ONNX from the session, TF.js exported here), a
    sample scene and ``lulc-infer``'s map of it, shared by all page runs."""
    root = tmp_path_factory.mktemp("page")
    bundle = root / "bundle"
    shutil.copytree(trained_bundle, bundle)
    image, _ = synthetic_scene(150, 200, seed=3)  # no multiple of the stride, a whole nodata tile
    image[:, :70, :70] = 0
    image[2, 100:104, 120:150] = 0
    sample = write_raster(root / "sample.tif", image, descriptions=BANDS)
    tfjs_error = None
    try:
        from lulc.export.tfjs import export_tfjs
        from lulc.runtime.core.bundle import Bundle

        export_tfjs(Bundle.load(bundle))
    except (ImportError, BackendUnavailable) as exc:
        tfjs_error = str(exc)
    run_inference(bundle, sample, root / "ref.tif", InferOptions(progress=False))
    with rasterio.open(root / "ref.tif") as src:
        reference = src.read(1)
    return {"bundle": bundle, "sample": sample, "reference": reference, "tfjs_error": tfjs_error}


@pytest.mark.slow
@pytest.mark.parametrize("engine,backend,expected", PAGE_RUNS, ids=[f"{e}-{b}" for e, b, _ in PAGE_RUNS])
def test_page_matches_lulc_infer(engine, backend, expected, page_case, bad_files, tmp_path):
    """The page's class map on each engine and backend equals lulc-infer's, and the page says
    which backend ran. WebGPU and WebGL run on SwiftShader (CPU), so only correctness counts."""
    _browser_stack()
    if engine == "tfjs" and page_case["tfjs_error"]:
        pytest.skip(f"TF.js export unavailable here: {page_case['tfjs_error']}")
    reference = page_case["reference"]
    out = tmp_path / "browser"
    bad = list(map(str, bad_files.values())) if backend == "wasm" else []  # page checks: once per engine
    with lulc_serve(page_case["bundle"], page_case["sample"]) as url:
        proc = subprocess.run(["node", str(E2E_SCRIPT), url, str(out), engine, backend, *bad],
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    browser = result["browser"]
    if backend == "webgpu":
        assert browser["webgpu"], f"Chromium offers no WebGPU adapter here: {browser}"
    if backend == "webgl":
        assert browser["webgl2"], f"Chromium offers no WebGL2 here: {browser}"
    assert result["state"] == "done", f"{engine}/{backend}: {result['message']} (browser: {browser})"
    assert result["console_errors"] == []
    label = result["stats"]["backend"]
    assert re.search(rf"\b{expected}\b", label), f"asked for {backend}, the page says it ran {label!r}"
    assert (result["height"], result["width"]) == reference.shape
    classes = np.fromfile(out / "classes.u8", dtype=np.uint8).reshape(reference.shape)
    agreement = float((classes == reference).mean())
    print(f"{engine}/{backend}: the page says {label!r}, {agreement:.4%} of pixels = lulc-infer, "
          f"{result['stats']['seconds']:.1f} s in the page; browser {browser}")
    assert agreement >= MIN_AGREEMENT, f"{engine}/{backend}: only {agreement:.4%} of the pixels match lulc-infer"
    assert (classes[:70, :70] == 255).all() and result["stats"]["tilesSkipped"] >= 1
    assert (out / "screenshot.png").stat().st_size > 10_000

    for wording, path in bad_files.items() if bad else ():
        shown = result["bad_files"][str(path)]
        assert shown["state"] == "error" and wording in shown["message"], shown
