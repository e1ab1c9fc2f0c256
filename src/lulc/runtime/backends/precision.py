"""Which of a bundle's gated model artefacts ``--precision auto|fp32|fp16|int8`` runs.

Every reduced-precision artefact in a bundle passed its own export gate, so choosing one is
only a question of what this device runs fastest: onnxruntime's INT8 kernels beat fp32 on
CPUs (VNNI or not), while GPUs gain from half precision (a TensorRT engine, or the fp16 ONNX
on onnxruntime's CUDA provider) and onnxruntime's CUDA provider has no fast INT8 path. An
explicit precision is a promise to the user: when the bundle lacks it, say which export
command makes it instead of silently running another precision.
"""
from __future__ import annotations

from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError

PRECISIONS = ("auto", "fp32", "fp16", "int8")
#: the ONNX artefact of each precision, as ``lulc export --target onnx`` names them
ONNX_ARTIFACTS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}
#: how to make each ONNX artefact (BUNDLE is replaced by the bundle's folder)
EXPORT_COMMANDS = {"fp32": "lulc export --target onnx BUNDLE", "fp16": "lulc export --target onnx --fp16 BUNDLE",
                   "int8": "lulc export --target onnx --int8 BUNDLE"}


def engine_precision(bundle: Bundle) -> str | None:
    """Precision of the bundle's TensorRT engine, or None when it has none."""
    art = bundle.manifest.artifacts.get("trt")
    return None if art is None else art.details.get("precision")


def choose_artifact(bundle: Bundle, precision: str, on_gpu: bool, *, engine_usable: bool | None = None) -> str:
    """The artefact name to open for ``precision`` on this device: ``"trt"`` (the TensorRT
    engine) or one of ``"onnx"``, ``"onnx-fp16"``, ``"onnx-int8"``.

    ``on_gpu``: the model will run on a GPU (a TensorRT engine or onnxruntime's CUDA
    provider is what the caller will use). ``engine_usable``: whether the bundle's TensorRT
    engine runs here (built for this GPU and TensorRT); None asks
    :func:`lulc.runtime.backends.trt.usable`, only on a GPU.

    * ``auto`` on CPU: ``onnx-int8`` where the bundle has it, else ``onnx``;
    * ``auto`` on GPU: a usable TensorRT engine (whatever precision it was built with: it
      passed its gate), else ``onnx-fp16`` where present, else ``onnx``;
    * ``fp32`` / ``fp16`` / ``int8``: on a GPU the TensorRT engine if it has that precision
      and is usable, else that precision's ONNX; a one-line BundleError naming the export
      command when the bundle has neither.
    """
    if precision not in PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    engine = engine_precision(bundle) if on_gpu else None
    if engine is not None and engine_usable is None:
        from lulc.runtime.backends.trt import usable

        engine_usable = usable(bundle)
    if engine is not None and engine_usable and precision in ("auto", engine):
        return "trt"
    if precision == "auto":
        preferred = "fp16" if on_gpu else "int8"
        name = ONNX_ARTIFACTS[preferred]
        return name if bundle.has(name) else ONNX_ARTIFACTS["fp32"]
    name = ONNX_ARTIFACTS[precision]
    if not bundle.has(name):
        command = EXPORT_COMMANDS[precision].replace("BUNDLE", str(bundle.root))
        raise BundleError(f"bundle {bundle.root} has no {precision} model ({name}): create it with `{command}`")
    return name
