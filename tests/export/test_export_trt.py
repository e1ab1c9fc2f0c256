"""TensorRT export and backend: everything around TensorRT is tested here without it;
the build itself runs only where TensorRT and a GPU exist (skipped elsewhere, never mocked)."""
from __future__ import annotations

import importlib.util
import inspect
import json

import numpy as np
import pytest
from click.testing import CliRunner

from lulc.export import trt as trt_export
from lulc.runtime.backends import prepare
from lulc.runtime.backends.trt import EngineTarget, check_compatible, chunks
from lulc.runtime.cli import main
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BackendUnavailable, BundleError, LulcError
from lulc.runtime.core.manifest import Artifact

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed: the 'not available' path cannot happen")
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installable here (see shared STACK notes)")

H100 = EngineTarget(gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0", tensorrt="10.7.0")


def test_engine_name_carries_gpu_compute_capability_and_version():
    assert H100.engine_name("int8") == "model.int8.nvidia-h100-80gb-hbm3.sm90.trt10.7.0.engine"


@pytest.mark.parametrize("other, field", [
    (EngineTarget("NVIDIA H200", "9.0", "10.7.0"), "gpu"),
    (EngineTarget("NVIDIA H100 80GB HBM3", "9.0", "10.8.0"), "tensorrt"),
    (EngineTarget("NVIDIA L4", "8.9", "10.7.0"), "compute_capability"),
])
def test_guard_refuses_another_gpu_or_tensorrt_and_says_rebuild(other, field):
    record = trt_export.engine_record(H100, "fp16", 8, 256, 13, 17, "keras")
    check_compatible(record, H100, "out/bundle")  # same setup: fine
    with pytest.raises(BackendUnavailable, match=rf"{field} .*rebuild it here with `lulc export --target trt out/bundle`"):
        check_compatible(record, other, "out/bundle")


def test_engine_record_is_a_valid_manifest_artifact():
    record = trt_export.engine_record(H100, "int8", 4, 64, 4, 17, "onnx-int8-trt")
    art = Artifact(path=H100.engine_name("int8"), sha256="0" * 64, format="tensorrt-engine", created="now",
                   parity={"argmax_agreement": 0.995}, details=record)
    back = Artifact.model_validate_json(art.model_dump_json()).details
    assert back["input_shape"] == [64, 64, 4] and back["profile"] == [[1, 64, 64, 4], [4, 64, 64, 4], [4, 64, 64, 4]]
    assert back["source"] == "onnx-int8-trt" and back["strongly_typed"] is True
    check_compatible(back, H100, "b")
    assert json.loads(json.dumps(back)) == record


def test_profile_spans_batch_one_to_max_at_the_runtime_tile():
    lo, opt, hi = trt_export.profile_shapes(256, 13, 16)
    assert lo == (1, 256, 256, 13) and opt == hi == (16, 256, 256, 13)


@pytest.mark.parametrize("precision, limits", [
    ("fp32", {"max_abs_diff": 1e-3}), ("fp16", {"min_agreement": 0.995}), ("int8", {"min_agreement": 0.995}),
])
def test_gate_limits_per_precision(precision, limits):
    assert trt_export.gate_limits(precision) == limits


@pytest.mark.parametrize("size", [64, 80])
def test_mosaic_builds_tile_sized_inputs_from_real_samples(size):
    samples = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
    grid = trt_export.mosaic(samples, size)
    assert grid.shape[1:] == (size, size, 3) and grid.flags.c_contiguous
    cells = [grid[i, r:r + 32, c:c + 32] for i in range(len(grid)) for r in range(0, size, 32) for c in range(0, size, 32)]
    full = [cell for cell in cells if cell.shape == (32, 32, 3)]
    if size % 32 == 0:  # the real case (tile 256, samples 64): every sample appears whole
        assert all(any(np.array_equal(s, cell) for cell in full) for s in samples)
    assert all(any(np.array_equal(s, cell) for s in samples) for cell in full)


def test_builder_uses_only_what_tensorrt_11_kept():
    # TensorRT 11 removed weak typing and implicit INT8 calibration; precision is the graph's
    source = inspect.getsource(trt_export.build_engine)
    for removed in ("IInt8EntropyCalibrator2", "BuilderFlag.INT8", "BuilderFlag.FP16", "int8_calibrator",
                    "set_calibration_profile"):
        assert removed not in source
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in source


def test_fp16_engines_are_built_from_an_fp16_graph_with_float32_io(bundle_copy):
    import onnx

    from lulc.export.parity import keras_reference

    bundle = Bundle.load(bundle_copy)
    model, samples, _ = keras_reference(bundle)
    tiles = trt_export.mosaic(samples, bundle.manifest.tile.size)
    fixed = bundle_copy / "fixed.onnx"
    path, what = trt_export.typed_onnx(bundle, model, "fp16", fixed, 17, tiles, trt_export.predict(model, tiles))
    graph = onnx.load(str(path)).graph
    assert path == fixed and "fp16" in what
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [bundle.manifest.tile.size, bundle.manifest.tile.size, 4]  # H/W fixed to the runtime tile


def test_int8_engines_need_the_int8_onnx_calibration_first(bundle_copy):
    with pytest.raises(BundleError, match=rf"`lulc export --target onnx --int8 {bundle_copy}`"):
        trt_export.typed_onnx(Bundle.load(bundle_copy), None, "int8", bundle_copy / "fixed.onnx", 17, None, None)


def test_chunks_respect_max_batch():
    assert [(s.start, s.stop) for s in chunks(10, 4)] == [(0, 4), (4, 8), (8, 10)]


@needs_no_trt
def test_export_without_tensorrt_says_so_and_how_to_install(bundle_copy):
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed here .*pip install 'lulc\[trt\]'"):
        trt_export.export_trt(Bundle.load(bundle_copy))
    result = CliRunner().invoke(main, ["export", "--target", "trt", str(bundle_copy)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "TensorRT is not installed" in result.output
    assert "trt" not in Bundle.load(bundle_copy).manifest.artifacts and not list(bundle_copy.glob("*.engine"))


@needs_no_trt
def test_runtime_without_tensorrt_falls_back_and_refuses_clearly(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    assert prepare(bundle, "auto").name == "onnx"
    with pytest.raises(LulcError, match=rf"`lulc export --target trt {bundle_copy}`"):
        prepare(bundle, "trt")


@needs_no_trt
@pytest.mark.slow
def test_target_all_writes_onnx_and_tfjs_and_skips_trt_with_a_warning(bundle_copy):
    result = CliRunner().invoke(main, ["export", "--target", "all", str(bundle_copy)])
    assert result.exit_code == 0, result.output
    assert "warning: trt skipped: TensorRT is not installed" in result.output
    artifacts = Bundle.load(bundle_copy).manifest.artifacts
    assert {"onnx", "tfjs"} <= set(artifacts) and "trt" not in artifacts
    assert "onnx: max abs diff" in result.output and "tfjs: max abs diff" in result.output


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_passes_its_gate_and_runs_in_the_runtime(bundle_copy, precision):
    bundle = Bundle.load(bundle_copy)
    figures = trt_export.export_trt(bundle, precision=precision, max_batch=4)["trt"]
    art = Bundle.load(bundle_copy).manifest.artifacts["trt"]
    assert art.details["precision"] == precision and art.parity == figures
    session = prepare(Bundle.load(bundle_copy), "trt")
    tiles = trt_export.mosaic(bundle.load_samples(), bundle.manifest.tile.size)
    assert session.run(tiles).shape == (*tiles.shape[:3], len(bundle.manifest.classes))
