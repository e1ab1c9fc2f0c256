"""Shared fixtures: tiny georeferenced rasters made in tmp_path, and one small trained bundle.

The session bundle (4 bands, 3 classes, a depth-2 U-Net trained one epoch) is built once and
copied per test that changes it, so the suite stays fast on two cores.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from lulc.runtime.backends import Session
from lulc.runtime.cli import main

BANDS = ["B02", "B03", "B04", "B08"]
CRS = "EPSG:32633"
NODATA = 0


def synthetic_scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint16 reflectance-like bands and a 3-class label map the bands actually explain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[(np.sin(xx / 9.0) + np.cos(yy / 7.0)) > 0.6] = 1
    labels[((xx // 24 + yy // 24) % 5) == 0] = 2
    base = np.array([[800, 900, 700, 3000], [600, 800, 500, 1500], [300, 400, 300, 200]], dtype=np.float32)
    image = base[labels].transpose(2, 0, 1) + rng.normal(0, 60, (len(BANDS), height, width))
    return np.clip(image, 1, 10000).astype(np.uint16), labels


def write_raster(path: Path, data: np.ndarray, crs: str | None = CRS, nodata=NODATA,
                 descriptions: list[str] | None = None, transform=None) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": transform or from_origin(500000, 5800000, 10, 10)}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> dict:
    """A 128 x 192 px 4-band image, its label raster (255 = unlabeled) and a classes.json."""
    root = tmp_path_factory.mktemp("scene")
    image, labels = synthetic_scene(128, 192)
    labels = labels.copy()
    labels[:, :5] = 255
    write_raster(root / "image.tif", image, descriptions=BANDS)
    write_raster(root / "labels.tif", labels, nodata=255)
    (root / "classes.json").write_text(
        '[{"id": 0, "name": "crop", "color": [230, 200, 80]}, {"id": 1, "name": "grass", "color": [120, 200, 90]},'
        ' {"id": 2, "name": "water", "color": [40, 90, 220]}]'
    )
    return {"root": root, "image": root / "image.tif", "labels": root / "labels.tif", "classes": root / "classes.json"}


@pytest.fixture(scope="session")
def trained_bundle(scene, tmp_path_factory) -> Path:
    """A bundle trained one epoch on the scene, exported to ONNX (read-only: copy to modify)."""
    from lulc.export.onnx import export_onnx
    from lulc.runtime.core.bundle import Bundle
    from lulc.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("bundles") / "unet"
    train(TrainConfig(image=str(scene["image"]), labels=str(scene["labels"]), classes=str(scene["classes"]),
                      output=str(out), epochs=1, tile=32, stride=16, split_block=32, depth=2, width=4,
                      batch_size=8, infer_tile=64, infer_overlap=16))
    export_onnx(Bundle.load(out))
    return out


@pytest.fixture
def bundle_copy(trained_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(trained_bundle, dst)
    return dst



def listing(files: tuple[str, ...] = (), maps: tuple[str, ...] = ()) -> list[str]:
    """Sorted file names of a folder holding ``files`` and the class ``maps`` lulc-infer wrote,
    each with the ``.aux.xml`` and ``.qml`` sidecars it writes beside a map."""
    return sorted([*files, *maps, *(m + ".aux.xml" for m in maps), *(m.rsplit(".", 1)[0] + ".qml" for m in maps)])


# ---- helpers shared by several test modules ----------------------------------------------

class PixelSession(Session):
    """A per-pixel 'model' (softmax of a fixed linear map of the bands): every tile predicts
    exactly what the whole image would, so any seam or carry bug shows as a difference."""

    name = "pixel"
    device = "numpy"
    precision = "fp32"

    def __init__(self, classes: int = 3):
        self.proj = np.linspace(-1.0, 1.0, len(BANDS) * classes, dtype=np.float32).reshape(len(BANDS), classes)
        self.calls = 0
        self.tiles = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.tiles += len(batch)
        return self.predict(batch)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.proj
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def session(monkeypatch) -> PixelSession:
    """A fast per-pixel model in place of the bundle's, for every run of lulc.runtime.infer."""
    from lulc.runtime import session as session_module

    s = PixelSession()
    monkeypatch.setattr(session_module, "prepare", lambda bundle, *options, **kw: s)
    return s


def one_line_failure(code: int, output: str, match: str) -> str:
    """Exit code 1 and exactly one non-empty line, naming ``match``, without a traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1, output
    assert "Traceback" not in output and len(lines) == 1, output
    assert match in lines[0], lines[0]
    return lines[0]


BLOCKER = textwrap.dedent(
    """
    import sys

    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "tf2onnx"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
    """
)


LULC_INFER = str(Path(sys.executable).with_name("lulc-infer"))


def infer(*args, **kwargs) -> subprocess.CompletedProcess:
    """``lulc-infer ARGS --no-progress`` in a real subprocess, as a user runs it."""
    return subprocess.run([LULC_INFER, *map(str, args), "--no-progress"], capture_output=True, text=True, timeout=300,
                          **kwargs)


def pixels(path: Path) -> np.ndarray:
    """Every band of a raster, to compare maps pixel for pixel."""
    with rasterio.open(path) as src:
        return src.read()


def run_without_tensorflow(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def cli_fails(args: list, match: str) -> str:
    """Run ``lulc ARGS`` in-process (CliRunner) and expect a one-line failure."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return one_line_failure(result.exit_code, result.output, match)


def infer_fails(bundle: Path, image: Path, match: str, *extra: str) -> str:
    """``lulc infer`` refuses with one line and leaves nothing at or beside its output."""
    out = image.parent / "out" / "map.tif"
    out.parent.mkdir(exist_ok=True)
    line = cli_fails(["infer", bundle, image, "-o", out, "--no-progress", *extra], match)
    assert not list(out.parent.iterdir()), list(out.parent.iterdir())
    return line
