"""onnxruntime backend: the default on CPU boxes and edge installs, CUDA where onnxruntime-gpu is."""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort

from lulc.runtime.backends import Session, check_model_shapes, device_arrays
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
#: concurrent CPU calls at most; the cores are split between them
MAX_CALLERS = 4


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask on Linux; macOS and Windows lack one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_split(cores: int) -> tuple[int, int]:
    """(concurrent calls, intra-op threads each) for ``cores`` CPU cores.

    Independent single-threaded calls beat one call split over the cores: a call's parallel
    sections wait for their slowest thread, and on a box where our reader and writer threads
    also need the cores, one preempted thread stalls the whole call (2 cores, 13-band U-Net:
    two 1-thread callers ran 12-15 % more tiles per second than one 2-thread session).
    """
    callers = max(1, min(cores, MAX_CALLERS))
    return callers, max(1, cores // callers)


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers (CUDA only with onnxruntime-gpu)."""
    return list(ort.get_available_providers())


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device``: ``cpu`` keeps onnxruntime-gpu off the GPU, ``cuda``
    needs the CUDA provider, ``auto`` prefers CUDA where it is installed."""
    available = available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and CUDA not in available:
        raise BackendUnavailable("--device cuda: this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                                 "on a machine with an NVIDIA GPU, or use --device cpu")
    return [p for p in (CUDA, "CPUExecutionProvider") if p in available]


class InOrder:
    """Results of submitted calls, in order; ``close`` drops the calls not yet started."""

    def __init__(self, futures: list[Future]):
        self._futures = deque(futures)

    def __iter__(self) -> InOrder:
        return self

    def __next__(self):
        if not self._futures:
            raise StopIteration
        return self._futures.popleft().result()

    def close(self) -> None:
        for f in self._futures:
            f.cancel()
        self._futures.clear()


class OrtSession(Session):
    """An ONNX session; on the CUDA provider it takes and returns device arrays (IO binding)."""

    name = "onnx"

    def __init__(self, bundle: Bundle, artifact: str = "onnx", providers: list[str] | None = None,
                 device: str = "auto", cores: int | None = None, precision: str = "fp32"):
        path = bundle.artifact_path(artifact)
        self.precision = precision  # the plan's (lulc.runtime.backends.plan), never guessed from a name
        self.layout = bundle.manifest.artifacts[artifact].details.get("layout", "nhwc")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads spin by default; that steals the cores our reader and
        # writer threads need between model calls (measured slower on 2 busy cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        callers, opts.intra_op_num_threads = cpu_split(cores or usable_cores())
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers or providers_for(device))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackendUnavailable(f"onnxruntime cannot load {path}: {reason}") from None
        # onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing:
        # report what the session really uses, not what was asked for.
        self.device = self.session.get_providers()[0]
        if device == "cuda" and self.device != CUDA:
            raise BackendUnavailable(f"--device cuda: onnxruntime could not start its CUDA provider here (it runs on "
                                     f"{self.device}); check the CUDA libraries and nvidia-smi, or use --device cpu")
        check_model_shapes(bundle, path.name, self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape,
                           self.layout)
        self.device_io = self.device == CUDA
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        # concurrent calls only on CPU; a GPU session gets its batches in stream order
        self._callers = None if self.device_io or callers == 1 else ThreadPoolExecutor(callers, "lulc-onnx")
        logger.info("onnxruntime providers: %s", self.session.get_providers())

    def map(self, batches: Iterable) -> Iterator:
        """``run`` over ``batches``, results in order; on CPU several calls run at once."""
        if not self._callers:
            return map(self.run, batches)
        return InOrder([self._callers.submit(self.run, b) for b in batches])

    def run(self, batch: Any) -> Any:
        """Class probabilities of a normalised batch: NumPy in and out on CPU, Numba device
        arrays in and out on CUDA (nothing crosses PCIe here)."""
        if not self.device_io:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        device_arrays.synchronize()  # the packing kernels must be done before onnxruntime's stream reads
        value = self.run_bound(batch, "cuda", device_arrays.cuda_pointer(batch))
        return device_arrays.wrap_pointer(value.data_ptr(), value.shape(), np.float32, owner=value)

    def run_bound(self, batch: Any, where: str, pointer: int) -> ort.OrtValue:
        """Run on a float32 C-contiguous buffer at ``pointer`` on ``where`` ('cpu' or 'cuda');
        the output stays where onnxruntime allocated it, on the same device."""
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, where, 0, np.float32, list(batch.shape), pointer)
        binding.bind_output(self.output_name, where)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]
