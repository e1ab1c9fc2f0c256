"""TensorRT export and backend: everything around TensorRT is tested here without it;
the build itself runs only where TensorRT and a GPU exist (skipped elsewhere, never mocked)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from lulc.export import trt as trt_export
from lulc.runtime.backends import prepare
from lulc.runtime.backends.trt import EngineTarget, check_compatible, chunks
from lulc.runtime.bundle import Bundle
from lulc.runtime.cli import main
from lulc.runtime.errors import BackendUnavailable
from lulc.runtime.manifest import Artifact

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
    record = trt_export.engine_record(H100, "fp16", 8, 256, 13, 17, None)
    check_compatible(record, H100, "out/bundle")  # same setup: fine
    with pytest.raises(BackendUnavailable, match=rf"{field} .*rebuild it here with `lulc export --target trt out/bundle`"):
        check_compatible(record, other, "out/bundle")


def test_engine_record_is_a_valid_manifest_artifact():
    record = trt_export.engine_record(H100, "int8", 4, 64, 4, 17, "calibration.abc.cache")
    art = Artifact(path=H100.engine_name("int8"), sha256="0" * 64, format="tensorrt-engine", created="now",
                   parity={"argmax_agreement": 0.995}, details=record)
    back = Artifact.model_validate_json(art.model_dump_json()).details
    assert back["input_shape"] == [64, 64, 4] and back["profile"] == [[1, 64, 64, 4], [4, 64, 64, 4], [4, 64, 64, 4]]
    check_compatible(back, H100, "b")
    assert json.loads(json.dumps(back)) == record


def test_profile_spans_batch_one_to_max_at_the_runtime_tile():
    lo, opt, hi = trt_export.profile_shapes(256, 13, 16)
    assert lo == (1, 256, 256, 13) and opt == hi == (16, 256, 256, 13)


@pytest.mark.parametrize("precision, limits", [
    ("fp32", {"max_abs_diff": 1e-3}), ("fp16", {"min_agreement": 0.995}), ("int8", {"min_agreement": 0.99}),
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


def test_calibration_feed_serves_fixed_batches_then_stops_and_caches(tmp_path):
    tiles = np.arange(5 * 2 * 2 * 1, dtype=np.float32).reshape(5, 2, 2, 1)
    feed = trt_export.CalibrationFeed(tiles, batch_size=2, cache=tmp_path / "cache" / "calib.cache")
    batches = [feed.next_batch() for _ in range(3)]
    assert [b.shape for b in batches] == [(2, 2, 2, 1)] * 3 and feed.next_batch() is None
    assert all(b.flags.c_contiguous and b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches)[:5], tiles)  # all tiles, in order
    np.testing.assert_array_equal(batches[-1][1], tiles[0])  # the partial batch is filled cyclically
    assert feed.batch_nbytes == 2 * 2 * 2 * 1 * 4
    assert feed.read_cache() is None
    feed.write_cache(b"TRT-calibration")
    assert feed.read_cache() == b"TRT-calibration"


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
    with pytest.raises(Exception, match=r"no 'trt' artefact"):
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
