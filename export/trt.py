"""TensorRT export: a fixed-H/W ONNX → a serialized engine for this GPU, gated on the GPU.

Written to NVIDIA's TensorRT 10 Python API (Builder, OnnxParser, optimisation profile,
BuilderFlag.FP16/INT8, IInt8EntropyCalibrator2, timing cache). TensorRT is not installable
on our CI and dev machines, so the parts around it (shapes, calibration feed, naming,
guard, manifest record) are plain Python, tested without it; see README, "TensorRT".
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from lulc.export.onnx import OPSET, convert, simplify_if_faithful
from lulc.export.parity import predict, staging, verify_and_record
from lulc.runtime.backends.trt import EngineTarget, TrtSession, cuda_call, current_target, import_tensorrt
from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BackendUnavailable

logger = logging.getLogger(__name__)

#: fp32 engines reorder float sums (tactics, fused kernels): 1e-3 on probabilities
FP32_TOLERANCE = 1e-3
#: reduced precisions are judged on the class map: share of pixels with Keras's argmax
MIN_AGREEMENT = {"fp16": 0.995, "int8": 0.99}
CACHE_DIR = "trt-cache"  # timing and calibration caches, kept in the bundle so rebuilds are fast


def gate_limits(precision: str) -> dict:
    if precision == "fp32":
        return {"max_abs_diff": FP32_TOLERANCE}
    return {"min_agreement": MIN_AGREEMENT[precision]}


def profile_shapes(tile: int, channels: int, max_batch: int) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes: any batch 1..max_batch, H/W fixed to the runtime tile.

    ``opt`` is ``max_batch`` because the runtime sends full batches except for the last one.
    """
    return (1, tile, tile, channels), (max_batch, tile, tile, channels), (max_batch, tile, tile, channels)


def mosaic(samples: np.ndarray, size: int) -> np.ndarray:
    """Tile-sized inputs assembled from the (smaller) stored sample tiles.

    The engine has fixed H/W, so calibration and parity need inputs of exactly that size;
    a grid of real samples keeps real spectra (reusing samples cyclically to fill the grid).
    """
    n, h, w, c = samples.shape
    rows, cols = -(-size // h), -(-size // w)
    count = max(1, -(-n // (rows * cols)))
    cells = samples[np.arange(count * rows * cols) % n].reshape(count, rows, cols, h, w, c)
    grid = cells.transpose(0, 1, 3, 2, 4, 5).reshape(count, rows * h, cols * w, c)
    return np.ascontiguousarray(grid[:, :size, :size])


class CalibrationFeed:
    """Batches for INT8 calibration and the calibration cache file, without TensorRT.

    TensorRT asks for fixed-size batches until it gets none; the last partial batch is
    filled up cyclically. A cache from an earlier build (same model, same name) skips
    calibration entirely.
    """

    def __init__(self, tiles: np.ndarray, batch_size: int, cache: Path):
        self.tiles = np.ascontiguousarray(tiles, dtype=np.float32)
        self.batch_size = batch_size
        self.cache = cache
        self._batches = self._iter()

    @property
    def batch_nbytes(self) -> int:
        return self.batch_size * self.tiles[0].nbytes

    def _iter(self) -> Iterator[np.ndarray]:
        n = len(self.tiles)
        for start in range(0, n, self.batch_size):
            yield np.ascontiguousarray(self.tiles[np.arange(start, start + self.batch_size) % n])

    def next_batch(self) -> np.ndarray | None:
        return next(self._batches, None)

    def read_cache(self) -> bytes | None:
        return self.cache.read_bytes() if self.cache.is_file() else None

    def write_cache(self, data: bytes) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        self.cache.write_bytes(data)


def engine_record(here: EngineTarget, precision: str, max_batch: int, tile: int, channels: int,
                  opset: int, calibration_cache: str | None) -> dict:
    """The manifest ``details`` the runtime's compatibility guard and session read back."""
    return {
        "gpu": here.gpu, "compute_capability": here.compute_capability, "tensorrt": here.tensorrt,
        "precision": precision, "max_batch": max_batch, "input_shape": [tile, tile, channels],
        "profile": [list(s) for s in profile_shapes(tile, channels, max_batch)], "onnx_opset": opset,
        "calibration_cache": calibration_cache,
    }


def _entropy_calibrator(feed: CalibrationFeed):
    """A ``trt.IInt8EntropyCalibrator2`` fed by ``feed`` (one device buffer, reused)."""
    trt, cudart = import_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_input = cuda_call(cudart.cudaMalloc(feed.batch_nbytes))

        def get_batch_size(self):
            return feed.batch_size

        def get_batch(self, names):
            batch = feed.next_batch()
            if batch is None:
                return None
            cuda_call(cudart.cudaMemcpy(self.device_input, batch.ctypes.data, batch.nbytes,
                                        cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device_input)]

        def read_calibration_cache(self):
            return feed.read_cache()

        def write_calibration_cache(self, cache):
            feed.write_cache(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, precision: str, shapes: tuple, timing_cache: Path,
                 feed: CalibrationFeed | None = None) -> bytes:
    """Parse the ONNX, build and serialize an engine; the timing cache is read and updated."""
    trt, _ = import_tensorrt()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, *shapes)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers TensorRT cannot quantise fall back to fp16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(feed)
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build a {precision} engine (see the log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def export_trt(bundle: Bundle, precision: str = "fp16", max_batch: int = 8, opset: int = OPSET) -> dict[str, dict]:
    """Build, run on the GPU against Keras on tile-sized sample mosaics, then record the engine."""
    here = current_target()  # first: no TensorRT or GPU means nothing else is worth doing
    from lulc.runtime.backends.keras_backend import load_keras_model

    model = load_keras_model(bundle)
    tile, channels = bundle.manifest.tile.size, len(bundle.manifest.input.channels)
    tiles = mosaic(bundle.load_samples(), tile)
    reference = predict(model, tiles)
    cache_dir = bundle.root / CACHE_DIR
    calibration = f"calibration.{bundle.fingerprint()[:12]}.{here.slug}.cache" if precision == "int8" else None
    details = engine_record(here, precision, max_batch, tile, channels, opset, calibration)
    name = here.engine_name(precision)
    previous = bundle.manifest.artifacts.get("trt")
    with staging(bundle.root / ".model.fixed.onnx.partial") as fixed, staging(bundle.root / f".{name}.partial") as staged:
        convert(model, fixed, opset, spatial=(tile, tile))
        simplify_if_faithful(fixed, tiles, reference)
        feed = CalibrationFeed(tiles, max_batch, cache_dir / calibration) if calibration else None
        staged.write_bytes(build_engine(fixed, precision, profile_shapes(tile, channels, max_batch),
                                        cache_dir / f"timing.{here.slug}.cache", feed))
        run = functools.partial(_run_engine, details=details, bundle_root=bundle.root, tiles=tiles)
        figures = verify_and_record(bundle, "trt", staged, reference, run, f"TensorRT {precision}",
                                    fmt="tensorrt-engine", dest=name, details=details, **gate_limits(precision))
    if previous is not None and previous.path != name:
        (bundle.root / previous.path).unlink(missing_ok=True)  # the engine this one replaces
    return {"trt": figures}


def _run_engine(path: Path, details: dict, bundle_root: Path, tiles: np.ndarray) -> np.ndarray:
    return TrtSession(path, details, bundle_root).run(tiles)
