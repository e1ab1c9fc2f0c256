"""lulc runtime: bundle loading and fast tiled inference, without TensorFlow.

This package is the edge install (numpy, numba, rasterio, onnxruntime). It must never
import TensorFlow: ``training`` and ``export`` depend on it, never the reverse.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lulc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

from lulc.runtime.core.errors import LulcError  # noqa: E402

__all__ = ["LulcError", "__version__"]
