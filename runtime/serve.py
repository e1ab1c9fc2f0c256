"""``lulc serve BUNDLE``: the browser demo, its libraries, the bundle and a sample raster on 127.0.0.1.

Inference runs in the page, so the server only hands out static files. Three things are
served under fixed URL prefixes so the page never needs to know where they live on disk:
``/`` the ``web/`` folder (page and ``node_modules``), ``/bundle/`` the model bundle and
``/sample.tif`` the built-in sample scene; ``/demo.json`` tells the page what is available.

Every response carries COOP/COEP headers: they make the page *cross-origin isolated*, which
is what unlocks SharedArrayBuffer and hence multi-threaded WebAssembly in onnxruntime-web
and the TF.js WASM backend (single-threaded otherwise: half the speed on two cores).
"""
from __future__ import annotations

import json
import logging
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from lulc.runtime.bundle import Bundle
from lulc.runtime.cli import handle_errors
from lulc.runtime.errors import BackendUnavailable, BundleError, InputRasterError

logger = logging.getLogger(__name__)

#: the page and its npm libraries, next to the Python packages in the source tree
WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
#: bundle artefacts the page can run, in the order it prefers them
WEB_ENGINES = ("tfjs", "onnx")
SAMPLE_URL = "sample.tif"


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from three roots, a generated ``/demo.json``, and isolation headers."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}

    def __init__(self, *args, web: Path, bundle: Path, sample: Path | None, config: bytes, **kwargs):
        self.web, self.bundle, self.sample, self.config = web, bundle, sample, config
        super().__init__(*args, directory=str(web), **kwargs)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/demo.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        super().do_GET()

    def translate_path(self, path: str) -> str:
        """Map a URL to a file under one of the roots; anything escaping its root is a 404."""
        rel = unquote(urlsplit(path).path).lstrip("/")
        if rel == SAMPLE_URL and self.sample is not None:
            return str(self.sample)
        root = self.web
        if rel == "bundle" or rel.startswith("bundle/"):
            root, rel = self.bundle, rel[len("bundle"):].lstrip("/")
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            return str(root / "__outside__")  # does not exist: the base class answers 404
        return str(target)

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (base-class signature)
        logger.debug("%s %s", self.address_string(), format % args)


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


def default_sample(bundle: Bundle) -> Path | None:
    """The scene the model was trained on, when it is one file still where training found it.

    Training records one path, or a list (one per date for time series, which the page does
    not stack): only a single image makes a sample.
    """
    image = bundle.manifest.provenance.get("data", {}).get("image")
    images = image if isinstance(image, list) else [image]
    return Path(images[0]) if len(images) == 1 and images[0] and Path(images[0]).is_file() else None


def make_server(bundle_dir: str | os.PathLike, sample: str | os.PathLike | None = None,
                host: str = "127.0.0.1", port: int = 8000, web: Path = WEB_ROOT) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) demo server; ``port=0`` picks a free port."""
    bundle = Bundle.load(bundle_dir)
    if not (web / "node_modules").is_dir():
        raise BackendUnavailable(f"the page's libraries are missing in {web / 'node_modules'}: run `npm ci --prefix {web}`")
    sample_path = Path(sample) if sample else default_sample(bundle)
    if sample_path is not None and not sample_path.is_file():
        raise InputRasterError(f"sample raster not found: {sample_path}")
    config = json.dumps(demo_config(bundle, sample_path)).encode()
    handler = partial(DemoHandler, web=web.resolve(), bundle=bundle.root.resolve(),
                      sample=sample_path.resolve() if sample_path else None, config=config)
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise BackendUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


@click.command("serve")
@click.argument("bundle", type=click.Path())
@click.option("--sample", type=click.Path(), default=None,
              help="GeoTIFF offered as the page's sample scene (default: the bundle's training image).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@handle_errors
def serve(bundle, sample, port):
    """Serve the browser demo for BUNDLE on 127.0.0.1 and print its URL (inference runs in the page)."""
    server = make_server(bundle, sample, port=port)
    click.echo(f"lulc demo: {server_url(server)}  (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
