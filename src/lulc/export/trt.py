"""TensorRT export: a typed ONNX graph → a serialized engine for this GPU, gated on the GPU.

Written to the part of NVIDIA's Python API that TensorRT 10 and 11 share: a strongly typed
network (the graph's tensor types are the precision; no ``BuilderFlag.FP16/INT8``, no
implicit INT8 calibrator, both removed in 11), optimisation profile, timing cache. INT8 is
explicit quantisation from the Q/DQ model that ``lulc export --target onnx --int8`` gated on
the test split. TensorRT is not installable on our CI and dev machines, so the parts around
it (shapes, typed graphs, naming, guard, manifest record) are plain Python, tested without
it; see README, "TensorRT".
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from lulc.export.int8 import AGREEMENT as INT8_AGREEMENT
from lulc.export.int8 import ARTIFACT as INT8_ARTIFACT
from lulc.export.onnx import OPSET, convert, simplify_if_faithful, to_fp16
from lulc.export.parity import predict, staging, verify_and_record
from lulc.runtime.backends.trt import EngineTarget, TrtSession, current_target, import_tensorrt
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, BundleError

logger = logging.getLogger(__name__)

#: fp32 engines reorder float sums (tactics, fused kernels): 1e-3 on probabilities
FP32_TOLERANCE = 1e-3
#: reduced precisions are judged on the class map: share of pixels with Keras's argmax
#: (int8: the int8 ONNX's own gate, so CPU and GPU int8 promise the same)
MIN_AGREEMENT = {"fp16": 0.995, "int8": INT8_AGREEMENT}
CACHE_DIR = "trt-cache"  # timing caches, kept in the bundle so rebuilds are fast


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

    The engine has fixed H/W, so parity needs inputs of exactly that size; a grid of real
    samples keeps real spectra (reusing samples cyclically to fill the grid).
    """
    n, h, w, c = samples.shape
    rows, cols = -(-size // h), -(-size // w)
    count = max(1, -(-n // (rows * cols)))
    cells = samples[np.arange(count * rows * cols) % n].reshape(count, rows, cols, h, w, c)
    grid = cells.transpose(0, 1, 3, 2, 4, 5).reshape(count, rows * h, cols * w, c)
    return np.ascontiguousarray(grid[:, :size, :size])


def engine_record(here: EngineTarget, precision: str, max_batch: int, tile: int, channels: int,
                  opset: int, source: str) -> dict:
    """The manifest ``details`` the runtime's compatibility guard and session read back;
    ``source`` names the typed ONNX graph the engine was built from."""
    return {
        "gpu": here.gpu, "compute_capability": here.compute_capability, "tensorrt": here.tensorrt,
        "precision": precision, "max_batch": max_batch, "input_shape": [tile, tile, channels],
        "profile": [list(s) for s in profile_shapes(tile, channels, max_batch)], "onnx_opset": opset,
        "source": source, "strongly_typed": True,
    }


def typed_onnx(bundle: Bundle, model, precision: str, fixed: Path, opset: int, tiles: np.ndarray,
               reference: np.ndarray) -> tuple[Path, str]:
    """The ONNX graph whose tensor types *are* the engine's precision, and what it is.

    TensorRT 11 removed the weak-typing flags (``BuilderFlag.FP16/INT8``) and implicit INT8
    calibration; a strongly typed network runs each layer in the type its graph gives it:
    fp32 the fixed-H/W conversion of the Keras model, fp16 that graph with fp16 weights and
    activations (float32 I/O), int8 the Q/DQ model that ``lulc export --target onnx --int8``
    gated on the test split (symmetric int8, float biases: what TensorRT parses), the same
    artefact the CPU runs.
    """
    if precision == "int8":
        if not bundle.has(INT8_ARTIFACT):
            raise BundleError(f"an int8 engine is built from the bundle's gated int8 ONNX: create it first with "
                              f"`lulc export --target onnx --int8 {bundle.root}`")
        return bundle.artifact_path(INT8_ARTIFACT), INT8_ARTIFACT
    size = tiles.shape[1]
    convert(model, fixed, opset, spatial=(size, size))
    simplify_if_faithful(fixed, tiles, reference)
    if precision == "fp32":
        return fixed, "keras (fixed-size ONNX)"
    to_fp16(fixed, fixed)  # read whole before written: in place is safe
    return fixed, "keras (fixed-size ONNX, fp16 weights and activations)"


def build_engine(onnx_path: Path, shapes: tuple, timing_cache: Path) -> bytes:
    """Parse the typed ONNX into a strongly typed network, build and serialize an engine;
    the timing cache is read and updated. No precision flags: the graph's types decide."""
    trt, _ = import_tensorrt()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    # required for typed graphs on TensorRT 10, the only mode (flag accepted, ignored) on 11
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
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
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
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
    name = here.engine_name(precision)
    previous = bundle.manifest.artifacts.get("trt")
    with staging(bundle.root / ".model.fixed.onnx.partial") as fixed, staging(bundle.root / f".{name}.partial") as staged:
        source, what = typed_onnx(bundle, model, precision, fixed, opset, tiles, reference)
        details = engine_record(here, precision, max_batch, tile, channels, opset, what)
        staged.write_bytes(build_engine(source, profile_shapes(tile, channels, max_batch),
                                        bundle.root / CACHE_DIR / f"timing.{here.slug}.cache"))
        run = functools.partial(_run_engine, details=details, bundle_root=bundle.root, tiles=tiles)
        figures = verify_and_record(bundle, "trt", staged, reference, run, f"TensorRT {precision}",
                                    fmt="tensorrt-engine", dest=name, details=details, **gate_limits(precision))
    if previous is not None and previous.path != name:
        (bundle.root / previous.path).unlink(missing_ok=True)  # the engine this one replaces
    return {"trt": figures}


def _run_engine(path: Path, details: dict, bundle_root: Path, tiles: np.ndarray) -> np.ndarray:
    return TrtSession(path, details, bundle_root).run(tiles)
