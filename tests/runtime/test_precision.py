"""--precision: which gated artefact runs on CPU and GPU, and the one-line error when absent
(decided once, by lulc.runtime.backends.plan.resolve)."""
from __future__ import annotations

import pytest

from lulc.runtime.backends import trt as trt_backend
from lulc.runtime.backends.plan import resolve
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, LulcError
from lulc.runtime.core.manifest import Artifact, ClassInfo, InputSpec, Manifest, Normalization, TileSpec


def bundle_with(*names: str, engine: str | None = None) -> Bundle:
    """A bundle manifest listing ``names`` (files are never opened by the choice)."""
    artifacts = {n: Artifact(path=n, sha256="0" * 64, format="onnx", created="now") for n in names}
    if engine:
        artifacts["trt"] = Artifact(path="model.engine", sha256="0" * 64, format="tensorrt-engine", created="now",
                                    details={"precision": engine})
    manifest = Manifest(task="segmentation", architecture="unet", input=InputSpec(bands=["B04"], dtype="uint16"),
                        normalization=Normalization(mean=[0.0], std=[1.0]), tile=TileSpec(size=64, overlap=8),
                        classes=[ClassInfo(id=0, name="a", color=(0, 0, 0)), ClassInfo(id=1, name="b", color=(1, 1, 1))],
                        artifacts=artifacts)
    return Bundle("out/bundle", manifest)


ALL_ONNX = ("onnx", "onnx-fp16", "onnx-int8")


def choose_artifact(bundle: Bundle, precision: str, on_gpu: bool, engine_usable: bool | None = None) -> str:
    """The artefact the plan runs with a GPU (onnxruntime's CUDA and the engine) or without one."""
    return resolve(bundle, "auto", "auto" if on_gpu else "cpu", precision, onnx_gpu=on_gpu,
                   engine_usable=engine_usable).artifact


@pytest.mark.parametrize("names, on_gpu, expected", [
    (ALL_ONNX, False, "onnx-int8"),  # CPU: int8 where the bundle has it
    (("onnx", "onnx-fp16"), False, "onnx"),  # fp16 on a CPU is slower than fp32: never chosen by auto
    (ALL_ONNX, True, "onnx-fp16"),  # GPU without an engine: fp16 ONNX on CUDA
    (("onnx", "onnx-int8"), True, "onnx"),  # onnxruntime CUDA has no fast int8 path
    (("onnx",), False, "onnx"),
])
def test_auto_prefers_int8_on_cpu_and_fp16_on_gpu(names, on_gpu, expected):
    assert choose_artifact(bundle_with(*names), "auto", on_gpu) == expected


@pytest.mark.parametrize("engine", ["fp32", "fp16", "int8"])
def test_auto_on_gpu_takes_a_usable_engine_whatever_its_precision(engine):
    bundle = bundle_with(*ALL_ONNX, engine=engine)
    assert choose_artifact(bundle, "auto", on_gpu=True, engine_usable=True) == "trt"
    assert choose_artifact(bundle, "auto", on_gpu=True, engine_usable=False) == "onnx-fp16"
    assert choose_artifact(bundle, "auto", on_gpu=False, engine_usable=True) == "onnx-int8"


def test_explicit_precision_takes_the_engine_only_when_it_has_that_precision():
    bundle = bundle_with(*ALL_ONNX, engine="int8")
    assert choose_artifact(bundle, "int8", on_gpu=True, engine_usable=True) == "trt"
    assert choose_artifact(bundle, "fp16", on_gpu=True, engine_usable=True) == "onnx-fp16"
    assert choose_artifact(bundle, "fp32", on_gpu=True, engine_usable=True) == "onnx"
    assert choose_artifact(bundle, "int8", on_gpu=False) == "onnx-int8"


def test_engine_usability_is_asked_of_the_trt_backend_only_on_a_gpu(monkeypatch):
    asked = []
    monkeypatch.setattr(trt_backend, "usable", lambda b: asked.append(b) or True)
    bundle = bundle_with("onnx", engine="fp16")
    assert choose_artifact(bundle, "auto", on_gpu=False) == "onnx" and not asked
    assert choose_artifact(bundle, "auto", on_gpu=True) == "trt" and asked == [bundle]


@pytest.mark.parametrize("precision, command", [
    ("int8", "lulc export --target onnx --int8 out/bundle"),
    ("fp16", "lulc export --target onnx --fp16 out/bundle"),
])
def test_missing_precision_is_one_line_naming_the_export_command(precision, command):
    with pytest.raises(BundleError) as err:
        choose_artifact(bundle_with("onnx", engine="fp32"), precision, on_gpu=True, engine_usable=True)
    message = str(err.value)
    assert f"`{command}`" in message and "\n" not in message and f"no {precision} model" in message


def test_unknown_precision_is_a_user_error():
    with pytest.raises(LulcError, match="unknown precision 'bf16'"):
        choose_artifact(bundle_with("onnx"), "bf16", on_gpu=False)
