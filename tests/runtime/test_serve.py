"""``lulc serve`` as an attacker meets it: real HTTP requests against a server on 127.0.0.1.

The server runs in a thread (``make_server(..., port=0)``); requests go through
``http.client`` so that the Host header, the raw path and missing headers are exactly what the
test says, not what a URL library normalises them to.
"""
from __future__ import annotations

import http.client
import json
import logging
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import BANDS, synthetic_scene, write_raster
from lulc.runtime.core.bundle import MANIFEST
from lulc.runtime.tools.serve import make_server
from lulc.runtime.tools.webpage import vendored_libs, web_root


@contextmanager
def serving(bundle: Path, sample: Path | None = None):
    """The server in a thread; yields its port."""
    server = make_server(bundle, sample, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def request(port: int, path: str, host: str | None = "default", method: str = "GET") -> tuple[int, dict, bytes]:
    """One request with exactly this Host header (``None``: no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", f"127.0.0.1:{port}" if host == "default" else host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def set_training_image(bundle: Path, image) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest.setdefault("provenance", {}).setdefault("data", {})["image"] = image
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def scene_tif(tmp_path) -> Path:
    return write_raster(tmp_path / "scene.tif", synthetic_scene(40, 50)[0], descriptions=BANDS)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LocalHost:8000", "[::1]",
                                  "[::1]:{port}"])
def test_loopback_hosts_are_served(trained_bundle, host):
    with serving(trained_bundle) as port:
        status, headers, body = request(port, "/", host.format(port=port))
    assert status == 200 and b"<html" in body


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "127.0.0.2", "0.0.0.0:{port}", "[::1]evil",
                                  "127.0.0.1:{port}/x", "", None])
def test_other_hosts_are_refused(trained_bundle, host):
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 must not read the bundle."""
    with serving(trained_bundle) as port:
        for path in ("/", "/demo.json", f"/bundle/{MANIFEST}"):
            status, headers, body = request(port, path, host if host is None else host.format(port=port))
            assert status in (403, 421), (host, path, status)
            assert b'"engines"' not in body and b"schema_version" not in body and b"<script" not in body
            assert headers["x-content-type-options"] == "nosniff"


def test_two_host_headers_are_refused(trained_bundle):
    with serving(trained_bundle) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", "/demo.json", skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        conn.putheader("Host", "evil.example")
        conn.endheaders()
        assert conn.getresponse().status == 403
        conn.close()


def test_headers_on_every_response(trained_bundle):
    lib = next(p for p in vendored_libs() if p.endswith(".js"))
    with serving(trained_bundle) as port:
        for path, expected in [("/", 200), ("/demo.json", 200), (f"/node_modules/{lib}", 200),
                               ("/nope.html", 404), ("/%00", 400), ("/js/", 404)]:
            status, headers, _ = request(port, path)
            assert status == expected, path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["cross-origin-embedder-policy"] == "require-corp", path
            assert headers["server"] == "lulc", path  # no "Python/3.x" next to it
            assert "python" not in " ".join(headers.values()).lower(), path
        status, headers, _ = request(port, "/", host="evil.example")
        assert headers["server"] == "lulc" and headers["x-content-type-options"] == "nosniff"


def test_content_types(trained_bundle):
    libs = vendored_libs()
    mjs, wasm = next(p for p in libs if p.endswith(".mjs")), next(p for p in libs if p.endswith(".wasm"))
    with serving(trained_bundle) as port:
        assert request(port, "/js/app.js")[1]["content-type"] == "text/javascript"
        assert request(port, f"/node_modules/{mjs}")[1]["content-type"] == "text/javascript"
        assert request(port, f"/node_modules/{wasm}", method="HEAD")[1]["content-type"] == "application/wasm"
        assert request(port, "/demo.json")[1]["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/js/", "/js", "/bundle/", "/bundle", "/node_modules/", "/node_modules/leaflet/",
                                  "/node_modules/leaflet/dist/", "/bundle/tfjs/", "/web/", "/tests/", "/tools/"])
def test_no_directory_listings(trained_bundle, path):
    with serving(trained_bundle) as port:
        status, _, body = request(port, path)
    assert status in (403, 404), (path, status)
    assert b"Directory listing" not in body


@pytest.mark.parametrize("path", [
    "/package.json", "/package-lock.json", "/README.md", "/tests/e2e.mjs", "/vendor.txt",  # the web folder's rest
    "/node_modules/playwright-core/package.json",                                         # not a page library
    "/node_modules/leaflet/dist/leaflet.js.map",
    "/%2e%2e/pyproject.toml", "/js/%2e%2e/%2e%2e/pyproject.toml", "/bundle/%2e%2e/%2e%2e/etc/passwd",
    "/bundle/..%2f..%2f..%2fetc%2fpasswd", "//etc/passwd",
])
def test_only_the_page_its_libraries_and_the_bundle(trained_bundle, path):
    with serving(trained_bundle) as port:
        assert request(port, path)[0] == 404, path


def test_bundle_symlink_out_of_the_bundle_is_not_served(bundle_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (bundle_copy / "leak.txt").symlink_to(secret)
    with serving(bundle_copy) as port:
        assert request(port, "/bundle/leak.txt")[0] == 404
        assert request(port, f"/bundle/{MANIFEST}")[0] == 200


@pytest.mark.parametrize("path", ["/%00", "/%00.html", "/js/%00app.js", "/bundle/%00", "/sample.tif%00"])
def test_nul_is_a_clean_400(trained_bundle, path, capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="lulc.runtime.tools.serve"), serving(trained_bundle) as port:
        status, _, _ = request(port, path)
        assert request(port, "/")[0] == 200  # the server lives on
    assert status == 400
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_malformed_request_lines(trained_bundle, capfd):
    """Garbage on the socket gets an error status, never a traceback."""
    import socket

    with serving(trained_bundle) as port:
        for raw in (b"GET\r\n\r\n", b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
                    b"GET http://[::1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(raw)
                reply = sock.recv(200)
            # an HTTP/0.9-style line gets the error page without a status line
            assert b" 200 " not in reply[:20], (raw, reply)
            assert any(mark in reply for mark in (b"HTTP/1.0 4", b"HTTP/1.0 5", b"Error code: ")), (raw, reply)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_training_image_is_a_sample_only_when_it_is_a_matching_geotiff(bundle_copy, scene_tif, tmp_path):
    three_bands = write_raster(tmp_path / "three.tif", synthetic_scene(20, 20)[0][:3])
    png = tmp_path / "scene.png"
    import rasterio

    with rasterio.open(scene_tif) as src, rasterio.open(png, "w", driver="PNG", width=src.width,
                                                        height=src.height, count=4, dtype="uint16") as dst:
        dst.write(src.read())
    for image in ["/etc/passwd", str(tmp_path), str(three_bands), str(png), str(tmp_path / "gone.tif"),
                  [str(scene_tif), str(scene_tif)], 42]:
        set_training_image(bundle_copy, image)
        with serving(bundle_copy) as port:
            config = json.loads(request(port, "/demo.json")[2])
            assert config["sample"] is None and config["sample_name"] is None, image
            assert request(port, "/sample.tif")[0] == 404, image
    set_training_image(bundle_copy, str(scene_tif))
    with serving(bundle_copy) as port:
        assert json.loads(request(port, "/demo.json")[2])["sample_name"] == "scene.tif"
        assert request(port, "/sample.tif")[2] == scene_tif.read_bytes()


def test_explicit_sample_is_served(bundle_copy, scene_tif):
    set_training_image(bundle_copy, "/etc/passwd")
    with serving(bundle_copy, scene_tif) as port:
        status, headers, body = request(port, "/sample.tif")
    assert status == 200 and body == scene_tif.read_bytes()
    assert headers["x-content-type-options"] == "nosniff"


def test_page_is_found_from_web_root():
    root = web_root()
    assert (root / "index.html").is_file() and (root / "js" / "app.js").is_file()
    assert vendored_libs(root) and all((root / "node_modules" / p).is_file() for p in vendored_libs(root))


def test_missing_libraries_are_one_line(trained_bundle, tmp_path, monkeypatch):
    page = tmp_path / "web"
    page.mkdir()
    for name in ("index.html", "vendor.txt"):
        (page / name).write_bytes((web_root() / name).read_bytes())
    monkeypatch.setenv("LULC_WEB_DIR", str(page))
    proc = _lulc("serve", str(trained_bundle), "--port", "0")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "the page's libraries are missing" in proc.stderr and "LULC_WEB_DIR" in proc.stderr


def _lulc(*args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("lulc")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_bad_port_is_one_line(trained_bundle, port):
    proc = _lulc("serve", str(trained_bundle), "--port", port)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--port {port}" in lines[0] and "0 for any free port" in lines[0]


def test_port_in_use_is_one_line(trained_bundle):
    with serving(trained_bundle) as port:
        proc = _lulc("serve", str(trained_bundle), "--port", str(port))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
