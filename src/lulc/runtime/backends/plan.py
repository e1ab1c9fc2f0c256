"""Which engine runs which of a bundle's artefacts at which precision: decided once, here.

``--backend``, ``--device`` and ``--precision`` (and ``--scene-stride``) resolve to a
:class:`Plan` before any model is opened; every session is then opened from its plan, and
the plan's precision is what runs (no artefact name is turned back into a precision later).

Every reduced-precision artefact in a bundle passed its own export gate, so choosing one is
only a question of what this device runs fastest: onnxruntime's INT8 kernels beat fp32 on
CPUs, while GPUs gain from half precision (a TensorRT engine, or the fp16 ONNX on
onnxruntime's CUDA provider, which has no fast INT8 path). An explicit precision is a promise
to the user: when the bundle lacks it, one line names the export command that makes it.

``auto`` backend: a TensorRT engine built for this GPU, then ONNX on CUDA, then Keras on a JAX
GPU, then ONNX on CPU, then Keras. ``--device cpu`` leaves out the GPU engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lulc.runtime.backends.scene_stride import stride_model
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, SettingError

BACKENDS = ("auto", "trt", "onnx", "keras")
#: ``cpu`` never touches a GPU, ``cuda`` refuses to run without one, ``auto`` takes the fastest
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
#: the ONNX artefact of each precision, as ``lulc export --target onnx`` names them
ONNX_ARTIFACTS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}
#: how to make each ONNX artefact (BUNDLE is replaced by the bundle's folder)
EXPORT_COMMANDS = {"fp32": "lulc export --target onnx BUNDLE", "fp16": "lulc export --target onnx --fp16 BUNDLE",
                   "int8": "lulc export --target onnx --int8 BUNDLE"}

Engine = Literal["trt", "onnx", "keras"]
RunPrecision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class Plan:
    """What a session will run: the engine, the bundle artefact (its name in ``bundle.json``),
    its precision, whether onnxruntime should use CUDA, and the tile context of a stride model."""

    backend: Engine
    artifact: str
    precision: RunPrecision
    on_gpu: bool = False
    context_px: int = 0


def engine_precision(bundle: Bundle) -> str | None:
    """Precision of the bundle's TensorRT engine, or None when it has none."""
    art = bundle.manifest.artifacts.get("trt")
    return None if art is None else art.details.get("precision")


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> None:
    if value not in allowed:
        raise SettingError(flag, f"unknown {flag.lstrip('-')} {value!r}; choose one of {', '.join(allowed)}")


def onnx_artifact(bundle: Bundle, precision: str, on_gpu: bool) -> str:
    """The ONNX artefact for ``precision``: ``auto`` takes int8 on CPU and fp16 on GPU where the
    bundle has them, else fp32; an explicit precision the bundle lacks is one line."""
    if precision == "auto":
        name = ONNX_ARTIFACTS["fp16" if on_gpu else "int8"]
        return name if bundle.has(name) else ONNX_ARTIFACTS["fp32"]
    name = ONNX_ARTIFACTS[precision]
    if not bundle.has(name):
        command = EXPORT_COMMANDS[precision].replace("BUNDLE", str(bundle.root))
        raise BundleError(f"bundle {bundle.root} has no {precision} model ({name}): create it with `{command}`")
    return name


def _cuda_onnx() -> bool:
    from lulc.runtime.backends import ort

    return ort.CUDA in ort.available_providers()


def resolve(bundle: Bundle, backend: str = "auto", device: str = "auto", precision: str = "auto",
            scene_stride: int | None = None, *, onnx_gpu: bool | None = None,
            engine_usable: bool | None = None, channels_first: bool = False) -> Plan:
    """The plan for these settings. ``onnx_gpu`` (onnxruntime has CUDA here) and
    ``engine_usable`` (the bundle's TensorRT engine runs on this GPU) are asked of the
    installed engines when not given, the engine only where a GPU may be used.
    ``channels_first``: the caller packs either layout (the block pipeline), so an ONNX
    model's channels-first twin runs where the export wrote one."""
    _choice(backend, BACKENDS, "--backend")
    _choice(device, DEVICES, "--device")
    _choice(precision, PRECISIONS, "--precision")
    stride = stride_model(bundle.manifest, scene_stride, bundle.root)
    if stride:
        if backend not in ("auto", "onnx") or precision not in ("auto", "fp32"):
            raise SettingError("--scene-stride", f"models run on --backend onnx at fp32, not {backend} at {precision}")
        return Plan("onnx", stride.artifact, "fp32", device != "cpu" and _ask(onnx_gpu, _cuda_onnx), stride.context_px)
    gpu_allowed = device != "cpu"
    engine = engine_precision(bundle)
    if backend == "trt" or (backend == "auto" and gpu_allowed and precision in ("auto", engine)
                            and _ask(engine_usable, lambda: _trt_usable(bundle))):
        return _trt_plan(bundle, precision)
    if backend == "auto":
        backend = _auto_backend(bundle, gpu_allowed, precision, onnx_gpu)
    if backend == "keras":
        if precision not in ("auto", "fp32"):
            raise SettingError("--precision", f"{precision}: --backend keras runs the fp32 Keras model; use "
                                              "--backend onnx for other precisions")
        return Plan("keras", "keras", "fp32", gpu_allowed)
    on_gpu = gpu_allowed and _ask(onnx_gpu, _cuda_onnx)
    artifact = onnx_artifact(bundle, precision, on_gpu)
    if channels_first and _twin_current(bundle, artifact):
        artifact = f"{artifact}-nchw"
    # what the artefact computes in is recorded with it (bundle.json version 2), not read from its name
    return Plan("onnx", artifact, bundle.manifest.artifacts[artifact].details.get("precision", "fp32"), on_gpu)


def _twin_current(bundle: Bundle, source: str) -> bool:
    """Whether ``source`` has a channels-first twin (export/layout.py) made from the model that
    is there now: the source is checked (inside the bundle, its checksum) as if it ran."""
    twin = bundle.manifest.artifacts.get(f"{source}-nchw")
    if twin is None:
        return False
    bundle.artifact_path(source)
    return twin.details.get("source_sha256") == bundle.manifest.artifacts[source].sha256


def _ask(given: bool | None, probe: object) -> bool:
    return bool(given) if given is not None else bool(probe())  # type: ignore[operator]


def _trt_usable(bundle: Bundle) -> bool:
    from lulc.runtime.backends import trt

    return trt.usable(bundle)


def _trt_plan(bundle: Bundle, precision: str) -> Plan:
    """The engine plan (whether it can open here — a GPU, the engine's file — is the TensorRT
    backend's to say when it opens it)."""
    engine = engine_precision(bundle) or "fp32"
    if precision not in ("auto", engine):
        raise BundleError(f"the bundle's TensorRT engine is {engine}, not {precision}; rebuild it with "
                          f"`lulc export --target trt --precision {precision} {bundle.root}`")
    return Plan("trt", "trt", engine, True)  # type: ignore[arg-type]


def _auto_backend(bundle: Bundle, gpu_allowed: bool, precision: str, onnx_gpu: bool | None) -> str:
    onnx = bundle.has("onnx")
    if gpu_allowed:
        if onnx and _ask(onnx_gpu, _cuda_onnx):
            return "onnx"
        if bundle.has("keras") and precision in ("auto", "fp32") and _jax_gpu():
            return "keras"
    return "onnx" if onnx else "keras"


def _jax_gpu() -> bool:
    from lulc.runtime.backends import keras_backend

    return keras_backend.on_jax_gpu()
