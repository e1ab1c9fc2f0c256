"""TensorRT backend: a serialized engine built by ``lulc export --target trt`` for one GPU.

An engine is only valid for the GPU model (compute capability) and TensorRT version that
built it; TensorRT itself may refuse it or, worse, run it slower or wrongly. The manifest
records all three, and a mismatch is a clear "rebuild" error before anything is loaded.
Buffers (pinned host, device) are allocated once for ``max_batch``; ``run`` only copies and
executes, with the current API (``set_tensor_address`` / ``execute_async_v3``).
"""
from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lulc.runtime.backends import Session, check_model_shapes
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, LulcError

logger = logging.getLogger(__name__)

INSTALL_HINT = ("install TensorRT 10 or 11 on a machine with an NVIDIA GPU: `pip install 'lulc[trt]'` "
                "(the wheels come from NVIDIA's index, pypi.nvidia.com)")


@dataclass(frozen=True)
class EngineTarget:
    """What a serialized engine is bound to."""

    gpu: str
    compute_capability: str
    tensorrt: str

    @property
    def slug(self) -> str:
        """File-name part, e.g. ``nvidia-h100-80gb-hbm3.sm90.trt10.7.0``."""
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-")
        return f"{gpu}.sm{self.compute_capability.replace('.', '')}.trt{self.tensorrt}"

    def engine_name(self, precision: str) -> str:
        return f"model.{precision}.{self.slug}.engine"


def check_compatible(recorded: dict, here: EngineTarget, bundle_root: Path | str) -> None:
    """Refuse an engine built for another GPU model or TensorRT version."""
    mismatches = [f"{field} {recorded.get(field)!r}, here {value!r}"
                  for field, value in asdict(here).items() if recorded.get(field) != value]
    if mismatches:
        raise BackendUnavailable(
            f"the TensorRT engine in {bundle_root} was built for another setup ({'; '.join(mismatches)}): "
            f"rebuild it here with `lulc export --target trt {bundle_root}`"
        )


def chunks(n: int, max_batch: int) -> Iterator[slice]:
    """Slices of at most ``max_batch`` items: the engine's profile ends at ``max_batch``."""
    return (slice(start, min(start + max_batch, n)) for start in range(0, n, max_batch))


def import_tensorrt() -> tuple[Any, Any]:
    """``tensorrt`` and cuda-python's runtime module, or a one-line install hint."""
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed here ({exc.name or exc}): {INSTALL_HINT}") from exc
    return trt, cudart


def cuda_call(result: tuple[Any, ...]) -> Any:
    """cuda-python returns ``(status, *values)``: raise on any status but success."""
    _, cudart = import_tensorrt()
    status, *values = result
    if status != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailable(f"CUDA call failed: {cudart.cudaGetErrorName(status)[1]}")
    return values[0] if len(values) == 1 else values or None


def current_target() -> EngineTarget:
    """GPU 0 and the TensorRT version of this machine."""
    trt, cudart = import_tensorrt()
    if cuda_call(cudart.cudaGetDeviceCount()) < 1:
        raise BackendUnavailable("TensorRT needs an NVIDIA GPU and none is visible (check nvidia-smi)")
    props = cuda_call(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return EngineTarget(gpu=name.rstrip("\x00"), compute_capability=f"{props.major}.{props.minor}",
                        tensorrt=trt.__version__)


def usable(bundle: Bundle) -> bool:
    """Whether ``auto`` can pick TensorRT: an engine, TensorRT, and a matching GPU."""
    if not bundle.has("trt"):
        return False
    try:
        check_compatible(bundle.manifest.artifacts["trt"].details, current_target(), bundle.root)
    except LulcError as exc:
        logger.info("TensorRT not used: %s", exc)
        return False
    return True


class TrtSession(Session):
    """A TensorRT engine with pinned host and device buffers allocated once (copy, execute, copy)."""
    name = "trt"

    def __init__(self, engine_path: Path, details: dict, bundle_root: Path | str = "BUNDLE"):
        trt, cudart = import_tensorrt()
        here = current_target()
        check_compatible(details, here, bundle_root)
        self._cudart = cudart
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"TensorRT cannot load {engine_path}: rebuild it with `lulc export --target trt {bundle_root}`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = int(details["max_batch"])
        self.tile_shape = tuple(details["input_shape"])  # (H, W, C), fixed at build time
        self.out_tail = tuple(self.engine.get_tensor_shape(self.output))[1:]
        self.stream = cuda_call(cudart.cudaStreamCreate())
        self._buffers = {n: self._allocate(n, (self.max_batch, *shape))
                         for n, shape in ((self.input, self.tile_shape), (self.output, self.out_tail))}
        self.precision = details.get("precision", "fp32")
        self.device = f"tensorrt {trt.__version__} {self.precision} on {here.gpu}"

    def _allocate(self, name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """A pinned host array and a device buffer for one I/O tensor, bound to the context."""
        nbytes = int(np.prod(shape)) * 4  # float32 I/O whatever the engine's inner precision
        host_ptr = cuda_call(self._cudart.cudaMallocHost(nbytes))
        host = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctypes.POINTER(ctypes.c_float)), shape)
        device = cuda_call(self._cudart.cudaMalloc(nbytes))
        self.context.set_tensor_address(name, int(device))
        return host, int(device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape[1:]) != self.tile_shape:
            raise BackendUnavailable(
                f"the TensorRT engine takes tiles of {self.tile_shape}, got {tuple(batch.shape[1:])}: "
                "run lulc-infer without --tile, or rebuild with `lulc export --target trt`"
            )
        cudart = self._cudart
        (h_in, d_in), (h_out, d_out) = self._buffers[self.input], self._buffers[self.output]
        results = []
        for part in chunks(len(batch), self.max_batch):
            n = part.stop - part.start
            h_in[:n] = batch[part]
            self.context.set_input_shape(self.input, (n, *self.tile_shape))
            cuda_call(cudart.cudaMemcpyAsync(d_in, h_in.ctypes.data, h_in[:n].nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            if not self.context.execute_async_v3(self.stream):
                raise BackendUnavailable("TensorRT failed to execute the engine")
            cuda_call(cudart.cudaMemcpyAsync(h_out.ctypes.data, d_out, h_out[:n].nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
            cuda_call(cudart.cudaStreamSynchronize(self.stream))
            results.append(h_out[:n].copy())
        return np.concatenate(results)

    def __del__(self):
        for host, device in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFreeHost(host.ctypes.data)
            self._cudart.cudaFree(device)


def open_bundle_engine(bundle: Bundle, device: str = "auto") -> TrtSession:
    """The bundle's recorded engine, after the compatibility guard and the manifest's shape check."""
    if device == "cpu":
        raise BackendUnavailable("--backend trt runs only on an NVIDIA GPU; use --device cuda or auto, "
                                 "or --backend onnx for the CPU")
    path = bundle.artifact_path("trt")
    session = TrtSession(path, bundle.manifest.artifacts["trt"].details, bundle.root)
    check_model_shapes(bundle, path.name, (None, *session.tile_shape), (None, *session.out_tail))
    return session
