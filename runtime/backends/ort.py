"""onnxruntime backend: the default on CPU boxes and edge installs."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from lulc.runtime.bundle import Bundle
from lulc.runtime.errors import BackendUnavailable

logger = logging.getLogger(__name__)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


class OrtSession:
    name = "onnx"

    def __init__(self, bundle: Bundle, artifact: str = "onnx", providers: list[str] | None = None):
        path = bundle.artifact_path(artifact)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads spin by default; that steals the cores our reader and
        # writer threads need between model calls (measured slower on 2 busy cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BackendUnavailable(f"onnxruntime cannot load {path}: {exc}") from exc
        # onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing:
        # report what the session really uses, not what was asked for.
        self.device = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        logger.info("onnxruntime providers: %s", self.session.get_providers())

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
