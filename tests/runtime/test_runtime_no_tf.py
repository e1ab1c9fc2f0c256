"""The runtime is an edge install: it must import and classify with TensorFlow unimportable."""
from __future__ import annotations

import rasterio

from conftest import BANDS, run_without_tensorflow, synthetic_scene, write_raster


def test_import_runtime_without_tensorflow():
    proc = run_without_tensorflow(
        """
        import lulc.runtime, lulc.runtime.infer, lulc.runtime.cli, lulc.runtime.backends.ort
        assert not any(m.startswith("tensorflow") for m in sys.modules)
        try:
            import tensorflow
        except ImportError:
            print("blocked ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "blocked ok" in proc.stdout


def test_lulc_infer_runs_without_tensorflow(trained_bundle, tmp_path):
    image, _ = synthetic_scene(60, 70)
    src = write_raster(tmp_path / "in.tif", image, descriptions=BANDS)
    out = tmp_path / "out.tif"
    proc = run_without_tensorflow(
        f"""
        from lulc.runtime.cli import infer
        try:
            infer.main([{str(trained_bundle)!r}, {str(src)!r}, "-o", {str(out)!r}, "--no-progress"],
                       prog_name="lulc-infer")
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert not any(m.startswith("tensorflow") for m in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as dst:
        assert dst.read(1).shape == (60, 70)
        assert dst.tags()["LULC_BACKEND"] == "onnx"
