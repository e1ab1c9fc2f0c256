"""``lulc serve BUNDLE``: the browser demo, its libraries, the bundle and a sample raster on 127.0.0.1.

Inference runs in the page, so the server only hands out static files. Three things are
served under fixed URL prefixes so the page never needs to know where they live on disk:
``/`` the page (``lulc.runtime.tools.webpage.web_root()``: a checkout's ``web/`` or the wheel's
``lulc/web/``) with the library files listed in its ``vendor.txt`` under ``/node_modules/``,
``/bundle/`` the model bundle and ``/sample.tif`` a sample scene; ``/demo.json`` tells the page
what is available. Nothing else is served: no directory listings, no other file of the web
folder or of ``node_modules``, nothing outside the bundle folder.

Every response carries COOP/COEP headers: they make the page *cross-origin isolated*, which
is what unlocks SharedArrayBuffer and hence multi-threaded WebAssembly in onnxruntime-web
and the TF.js WASM backend (single-threaded otherwise: half the speed on two cores).

The server answers only requests addressed to the loopback names (``Host`` of
``127.0.0.1``, ``localhost`` or ``[::1]``, any port): a web page on another site that points
its own host name at 127.0.0.1 (DNS rebinding) gets 403 and cannot read the bundle.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import click

from lulc.runtime.cli_errors import handle_errors
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, BundleError, InputRasterError, LulcError
from lulc.runtime.tools.webpage import libs_hint, missing_libs, vendored_libs, web_root

logger = logging.getLogger(__name__)

#: bundle artefacts the page can run, in the order it prefers them
WEB_ENGINES = ("tfjs", "onnx")
SAMPLE_URL = "sample.tif"
#: the page's own files under the web root (the libraries come from vendor.txt)
PAGE_FILES = ("index.html", "style.css")
PAGE_SCRIPTS = "js/"
LIBS = "node_modules/"
#: Host headers this server answers: the loopback names, with an optional port
ALLOWED_HOST = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::\d{1,5})?", re.IGNORECASE)


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from three roots, a generated ``/demo.json``, and the security headers."""

    server_version = "lulc"
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}

    def __init__(self, *args, web: Path, bundle: Path, sample: Path | None, config: bytes,
                 libs: frozenset[str], **kwargs):
        self.web, self.bundle, self.sample, self.config, self.libs = web, bundle, sample, config, libs
        super().__init__(*args, directory=str(web), **kwargs)

    def version_string(self) -> str:
        return self.server_version  # the base class appends Python's version

    def parse_request(self) -> bool:
        """The base parsing, then the Host check (every method, before anything is read)."""
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not ALLOWED_HOST.fullmatch(hosts[0].strip()):
            self.send_error(HTTPStatus.FORBIDDEN, "this server answers only 127.0.0.1, localhost and [::1]")
            return False
        return True

    def send_head(self) -> io.BytesIO | BinaryIO | None:
        try:
            path = unquote(urlsplit(self.path).path)
        except ValueError:  # e.g. an unbalanced "[" in an absolute-form URL
            path = "\0"
        if "\0" in path or not path.startswith("/"):
            self.send_error(HTTPStatus.BAD_REQUEST, "bad path")
            return None
        if path == "/demo.json":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            return io.BytesIO(self.config)
        try:
            target = self.translate_path(self.path)
            if target != str(self.web) and os.path.isdir(target):  # only / is a folder with a page
                self.send_error(HTTPStatus.NOT_FOUND, "no directory listings")
                return None
            return super().send_head()
        except ValueError:  # a path the OS refuses to look up
            self.send_error(HTTPStatus.BAD_REQUEST, "bad path")
            return None

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "no directory listings")
        return None

    def _served(self, rel: str) -> bool:
        """Whether ``rel`` (relative to the web root) is part of the page or its libraries."""
        if rel in ("", *PAGE_FILES):
            return True
        if rel.startswith(PAGE_SCRIPTS):
            return rel.endswith(".js")
        return rel.startswith(LIBS) and rel[len(LIBS):] in self.libs

    def translate_path(self, path: str) -> str:
        """Map a URL to a file under one of the roots; anything else is a 404."""
        rel = unquote(urlsplit(path).path).lstrip("/")
        nowhere = str(self.web / "__not_served__")  # does not exist: the base class answers 404
        if rel == SAMPLE_URL:
            return str(self.sample) if self.sample is not None else nowhere
        if rel == "bundle" or rel.startswith("bundle/"):
            root, rel = self.bundle, rel[len("bundle"):].lstrip("/")
        elif self._served(rel):
            root = self.web
        else:
            return nowhere
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            return nowhere
        return str(target)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (base-class signature)
        logger.debug("%s %s", self.address_string(), format % args)


class DemoServer(ThreadingHTTPServer):
    """A threaded server whose request errors are one log line, never a traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the browser went away
            logger.debug("%s: %s", client_address[0], exc)
        else:
            logger.warning("request from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)


def demo_config(bundle: Bundle, sample: Path | None) -> dict:
    """What the page needs to start: where the bundle is, which engines it has, the sample."""
    engines = [e for e in WEB_ENGINES if bundle.has(e)]
    if not engines:
        raise BundleError(
            f"bundle {bundle.root} has no artefact the browser can run; "
            f"create one with `lulc export --target tfjs {bundle.root}` (or --target onnx)"
        )
    return {"bundle": "bundle/", "engines": engines,
            "sample": SAMPLE_URL if sample else None, "sample_name": sample.name if sample else None}


def is_sample_raster(path: Path, bundle: Bundle) -> bool:
    """A file that opens as a GeoTIFF with as many bands as the bundle's model takes."""
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as src:
            return src.driver == "GTiff" and src.count == len(bundle.manifest.input.bands)
    except (RasterioError, OSError, ValueError):
        return False


def default_sample(bundle: Bundle) -> Path | None:
    """The scene the model was trained on, when it is one GeoTIFF still where training found it.

    ``provenance.data.image`` is whatever ``bundle.json`` says, so it is offered only when it
    opens as a GeoTIFF with the bundle's band count (never an arbitrary file). Training records
    one path, or a list (one per date for time series, which the page does not stack): only a
    single image makes a sample.
    """
    data = bundle.manifest.provenance.get("data", {})
    image = data.get("image") if isinstance(data, dict) else None
    images = image if isinstance(image, list) else [image]
    if len(images) != 1 or not isinstance(images[0], str) or not images[0]:
        return None
    path = Path(images[0])
    if not path.is_absolute():  # recorded relative to where training ran: try the bundle's parent too
        path = path if path.is_file() else bundle.root.parent / path
    if is_sample_raster(path, bundle):
        return path
    logger.info("no sample scene: the bundle's training image %s is not a %d-band GeoTIFF here",
                images[0], len(bundle.manifest.input.bands))
    return None


def make_server(bundle_dir: str | os.PathLike, sample: str | os.PathLike | None = None,
                host: str = "127.0.0.1", port: int = 8000, web: Path | None = None) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) demo server; ``port=0`` picks a free port.

    ``sample`` must be a GeoTIFF with the bundle's band count (the page reads nothing else, and
    the server must not hand out an arbitrary file); without it, the bundle's training image
    when :func:`default_sample` accepts it. ``web`` defaults to :func:`web_root`.
    """
    if not 0 <= port <= 65535:
        raise LulcError(f"--port {port} is not a TCP port: use 1-65535, or 0 for any free port")
    bundle = Bundle.load(bundle_dir)
    web = (web or web_root()).resolve()
    if not (web / "index.html").is_file():
        raise BackendUnavailable(f"the browser page is missing: no index.html in {web}")
    missing = missing_libs(web)
    if missing:
        raise BackendUnavailable(f"the page's libraries are missing in {web / 'node_modules'} "
                                 f"({len(missing)} files, e.g. {missing[0]}): {libs_hint(web)}")
    sample_path = Path(sample) if sample else default_sample(bundle)
    if sample_path is not None and not sample_path.is_file():
        raise InputRasterError(f"sample raster not found: {sample_path}")
    if sample_path is not None and not is_sample_raster(sample_path, bundle):
        raise InputRasterError(f"--sample {sample_path} is not a GeoTIFF with the bundle's "
                               f"{len(bundle.manifest.input.bands)} bands ({', '.join(bundle.manifest.input.bands)})")
    config = json.dumps(demo_config(bundle, sample_path)).encode()
    handler = partial(DemoHandler, web=web, bundle=bundle.root.resolve(), config=config,
                      sample=sample_path.resolve() if sample_path else None, libs=frozenset(vendored_libs(web)))
    try:
        return DemoServer((host, port), handler)
    except OSError as exc:
        raise BackendUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc


def server_url(server: ThreadingHTTPServer) -> str:
    """The page's address (http://127.0.0.1:PORT/) of a bound server."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/" if isinstance(host, str) else f"http://{host.decode()}:{port}/"


@click.command("serve")
@click.argument("bundle", type=click.Path())
@click.option("--sample", type=click.Path(), default=None,
              help="GeoTIFF offered as the page's sample scene (default: the bundle's training image, "
                   "when it is a GeoTIFF with the model's band count).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@handle_errors
def serve(bundle: str, sample: str | None, port: int) -> None:
    """Serve the browser demo for BUNDLE on 127.0.0.1 and print its URL (inference runs in the page)."""
    server = make_server(bundle, sample, port=port)
    click.echo(f"lulc demo: {server_url(server)}  (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
